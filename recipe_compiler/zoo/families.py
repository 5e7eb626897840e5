"""Tiny random model families, for tests, benchmarks and `tailorc zoo --random`.

Consumes: an architecture name, a size, a seed.
Produces: Hugging Face checkpoint directories `base`, and "fine-tunes" of it (the base plus
small seeded noise, so that task arithmetic has real deltas to work with), saved as
safetensors with a config that `AutoModelForCausalLM` loads.

These models know nothing; `recipe_compiler.zoo` trains a family that does.
"""

from __future__ import annotations

from pathlib import Path

import torch

# architecture -> (transformers config class name, extra config keys)
ARCHES: dict[str, tuple[str, dict]] = {
    "llama": ("LlamaConfig", {}),
    "mistral": ("MistralConfig", {}),
    "qwen2": ("Qwen2Config", {}),
    "qwen3": ("Qwen3Config", {"head_dim": 8}),
    "phi3": ("Phi3Config", {"pad_token_id": 0}),
    "gpt2": ("GPT2Config", {}),
    "gpt_neox": ("GPTNeoXConfig", {}),
}


def _config(arch: str, layers: int, hidden: int, vocab: int):
    import transformers

    cls_name, extra = ARCHES[arch]
    cls = getattr(transformers, cls_name)
    if arch == "gpt2":
        return cls(n_embd=hidden, n_layer=layers, n_head=4, n_positions=128, vocab_size=vocab,
                   bos_token_id=1, eos_token_id=2)
    kw = dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
              num_attention_heads=4, vocab_size=vocab, max_position_embeddings=128,
              bos_token_id=1, eos_token_id=2)
    if arch != "gpt_neox":
        kw["num_key_value_heads"] = 2
    return cls(**kw, **extra)


def make_family(out_dir: Path, arch: str = "llama", names: tuple[str, ...] = ("base", "math",
                "code"), *, layers: int = 8, hidden: int = 32, vocab: int = 128, seed: int = 0,
                noise: float = 0.02, dtype: torch.dtype = torch.float32) -> dict[str, Path]:
    """Write `out_dir/<name>` for each name; the first is the base."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    torch.manual_seed(seed)
    config = _config(arch, layers, hidden, vocab)
    base = AutoModelForCausalLM.from_config(config).to(dtype)
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    paths = {}
    for k, name in enumerate(names):
        model = base
        if k > 0:
            gen = torch.Generator().manual_seed(seed * 1000 + k)
            state = {n: (v + noise * torch.randn(v.shape, generator=gen).to(v.dtype)
                         if v.is_floating_point() else v) for n, v in base_state.items()}
            model.load_state_dict(state)
        path = out_dir / name
        model.save_pretrained(path, safe_serialization=True)
        GenerationConfig(bos_token_id=1, eos_token_id=2).save_pretrained(path)
        paths[name] = path
        model.load_state_dict(base_state)
    return paths
