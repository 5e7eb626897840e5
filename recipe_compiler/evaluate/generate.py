"""Batched greedy decoding that gives the same text as decoding one prompt at a time.

Consumes prompts, a causal LM (called only as ``model(input_ids, attention_mask,
position_ids).logits``) and its tokenizer. Produces one completion per prompt, cut at the first
newline, without special tokens.

Prompts are encoded like lm-eval-harness encodes them (the tokenizer's own special tokens, so
BOS where the tokenizer adds one), sorted longest first and left-padded; position ids count from
each row's first real token. There is no KV cache: every step re-runs the whole (short)
sequence, which is exact for any module and cheap at the lengths tasks use. Rows that have
stopped leave the batch, and padding columns nobody needs any more are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from recipe_compiler.evaluate.loglik import encode_texts
from recipe_compiler.evaluate.modelio import (
    forward_logits,
    model_max_length,
    pad_batch,
    pad_token_id,
)


class _StopRule:
    """Whether a generated token ends a completion: EOS, or any token whose text has a newline.

    A newline that only appears across two tokens is not caught here; decoding then continues
    to `max_new_tokens` and the final text is still cut at the newline, so results are the same.
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._eos = tokenizer.eos_token_id
        self._cache: dict[int, bool] = {}

    def __call__(self, token: int) -> bool:
        if token == self._eos:
            return True
        if token not in self._cache:
            self._cache[token] = "\n" in self._tokenizer.decode([token])
        return self._cache[token]


@torch.inference_mode()
def greedy_generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    max_length: int | None = None,
) -> list[str]:
    """Greedy completion of each prompt, up to a newline, EOS or `max_new_tokens` tokens.

    A prompt longer than `max_length` (default: the model's context length) minus
    `max_new_tokens` loses its start, as in lm-eval.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    budget = max(1, (max_length or model_max_length(model, tokenizer)) - max_new_tokens)
    encoded = [ids[-budget:] for ids in encode_texts(tokenizer, prompts)]
    unique = sorted(set(encoded), key=lambda s: (-len(s), s))
    stop = _StopRule(tokenizer)
    outputs: dict[tuple[int, ...], str] = {}
    for start in range(0, len(unique), batch_size):
        chunk = unique[start : start + batch_size]
        new_tokens = _generate_chunk(
            model, chunk, max_new_tokens, pad_token_id(tokenizer), stop, torch.device(device)
        )
        for prompt_ids, toks in zip(chunk, new_tokens, strict=True):
            text = tokenizer.decode(toks, skip_special_tokens=True)
            outputs[prompt_ids] = text.split("\n", 1)[0]
    return [outputs[e] for e in encoded]


def _generate_chunk(
    model: Any,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    pad_id: int,
    stop: _StopRule,
    device: torch.device,
) -> list[list[int]]:
    ids, mask = pad_batch(prompts, pad_id, "left", device)
    generated: list[list[int]] = [[] for _ in prompts]
    active = list(range(len(prompts)))
    for _ in range(max_new_tokens):
        next_tokens = forward_logits(model, ids, mask)[:, -1].argmax(dim=-1)
        ids = torch.cat([ids, next_tokens.unsqueeze(1)], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        keep = []
        for b, token in enumerate(next_tokens.tolist()):
            generated[active[b]].append(token)
            if not stop(token):
                keep.append(b)
        if not keep:
            break
        if len(keep) < len(active):
            ids, mask = _drop_rows(ids, mask, keep)
            active = [active[b] for b in keep]
    return generated


def _drop_rows(
    ids: torch.Tensor, mask: torch.Tensor, keep: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep only rows `keep`, then drop leading columns that are padding in every kept row."""
    index = torch.as_tensor(keep, device=ids.device)
    ids, mask = ids.index_select(0, index), mask.index_select(0, index)
    first = int(mask.any(dim=0).nonzero()[0])
    return ids[:, first:], mask[:, first:]
