"""One decoder layer of SmolLM2-135M's shape, in float32 and in bfloat16, on this CPU.

Random weights (nothing is downloaded); transformers' own LlamaDecoderLayer with SDPA
attention, no gradient. Prints milliseconds per call and the bfloat16 speed-up for a few
batch shapes, and whether the CPU reports AMX (`amx_bf16`), where bfloat16 matmuls run in
hardware: what `tailorc evolve`'s bfloat16 hint rests on (docs/results.md).

    python bench/layer_dtype.py [--threads 2] [--repeats 10]
"""

from __future__ import annotations

import argparse
import time

from recipe_compiler.evaluate.checkpoint import cpu_flags


def main() -> None:
    import torch
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    # SmolLM2-135M: hidden 576, MLP 1536, 9 query heads over 3 key/value heads of 64
    cfg = LlamaConfig(hidden_size=576, intermediate_size=1536, num_attention_heads=9,
                      num_key_value_heads=3, head_dim=64, num_hidden_layers=1)
    cfg._attn_implementation = "sdpa"
    layer = LlamaDecoderLayer(cfg, 0).eval()
    rotary = LlamaRotaryEmbedding(cfg)
    amx = "amx_bf16" in cpu_flags()
    print(f"{a.threads} threads; AMX (amx_bf16): {'yes' if amx else 'no'}\n")
    print("| batch x tokens | float32 ms | bfloat16 ms | bfloat16 speed-up |")
    print("|---|---:|---:|---:|")
    for rows, tokens in ((50, 64), (20, 128), (8, 256)):
        ms = {}
        for dtype in (torch.float32, torch.bfloat16):
            module = layer.to(dtype)
            x = torch.randn(rows, tokens, cfg.hidden_size, dtype=dtype)
            pos = torch.arange(tokens)[None].expand(rows, tokens)
            cos, sin = rotary(x, pos)
            ms[dtype] = 1e3 * _best_call(module, x, pos, (cos, sin), a.repeats)
        print(f"| {rows} x {tokens} | {ms[torch.float32]:.1f} | {ms[torch.bfloat16]:.1f} | "
              f"{ms[torch.float32] / ms[torch.bfloat16]:.1f}x |")


def _best_call(layer, x, positions, rotary, repeats: int) -> float:
    """Least wall seconds of one call, after 3 warm-up calls."""
    import torch

    with torch.no_grad():
        for _ in range(3):
            layer(x, attention_mask=None, position_ids=positions, position_embeddings=rotary)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            layer(x, attention_mask=None, position_ids=positions, position_embeddings=rotary)
            best = min(best, time.perf_counter() - start)
    return best


if __name__ == "__main__":
    main()
