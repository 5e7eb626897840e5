"""Random Llama-shaped checkpoints for the benchmarks, written without transformers.

    python bench/checkpoints.py DIR LAYERS SEED [DTYPE]

Benchmarks create models in a child process (this script), so that their own process stays
small: a child's peak RSS counts the memory of the process it was forked from.
"""

from __future__ import annotations

import sys
from pathlib import Path

HIDDEN, INTER, VOCAB = 1024, 2816, 32000


def make_model(path: Path, layers: int, seed: int, dtype: str = "bfloat16") -> None:
    """A Llama-shaped checkpoint in ~1 GB shards, written without transformers."""
    import json

    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    path.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    td = getattr(torch, dtype)

    def rand(*shape):
        return (torch.randn(*shape, generator=g) * 0.02).to(td)

    tensors = {"model.embed_tokens.weight": rand(VOCAB, HIDDEN),
               "model.norm.weight": torch.ones(HIDDEN, dtype=td), "lm_head.weight": rand(VOCAB,
                                                                                          HIDDEN)}
    for i in range(layers):
        p = f"model.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            tensors[f"{p}self_attn.{name}.weight"] = rand(HIDDEN, HIDDEN)
        for name, shape in (("gate_proj", (INTER, HIDDEN)), ("up_proj", (INTER, HIDDEN)),
                            ("down_proj", (HIDDEN, INTER))):
            tensors[f"{p}mlp.{name}.weight"] = rand(*shape)
        for name in ("input_layernorm", "post_attention_layernorm"):
            tensors[f"{p}{name}.weight"] = torch.ones(HIDDEN, dtype=td)
    _save_sharded(path, tensors, save_file)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
              "hidden_size": HIDDEN, "intermediate_size": INTER, "num_hidden_layers": layers,
              "num_attention_heads": 16, "num_key_value_heads": 16, "vocab_size": VOCAB,
              "torch_dtype": dtype, "rms_norm_eps": 1e-5, "max_position_embeddings": 2048}
    (path / "config.json").write_text(json.dumps(config, indent=2))


def _save_sharded(path: Path, tensors: dict, save_file) -> None:
    import json

    shards, current, size = [], {}, 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if current and size + nbytes > 1_000_000_000:
            shards.append(current)
            current, size = {}, 0
        current[name] = t
        size += nbytes
    shards.append(current)
    weight_map = {}
    for k, shard in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, path / fname, metadata={"format": "pt"})
        weight_map.update({n: fname for n in shard})
    (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


def make_in_child(path: Path, layers: int, seed: int, dtype: str = "bfloat16") -> None:
    import subprocess

    subprocess.run([sys.executable, __file__, str(path), str(layers), str(seed), dtype],
                   check=True)


if __name__ == "__main__":
    make_model(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
               sys.argv[4] if len(sys.argv) > 4 else "bfloat16")
