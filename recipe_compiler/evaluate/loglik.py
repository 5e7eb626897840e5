"""Batched log-likelihoods: continuations given contexts, and rolling windows over a text.

Consumes (context, continuation) string pairs or one long text, a causal LM and its tokenizer.
Produces one summed log-probability (natural log) per pair, or per-token log-probs for a text.

Tokenisation follows lm-eval-harness ``HFLM``: trailing whitespace of the context moves to the
continuation, context+continuation is encoded as one string and split at the length of the
encoded context, an empty context conditions on BOS/EOS, and over-long inputs are cut from the
left. Requests are de-duplicated, sorted longest first (least padding, and an out-of-memory
error shows up on the first batch) and right-padded, so real tokens never see padding.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import torch

from recipe_compiler.evaluate.modelio import (
    forward_logits,
    model_max_length,
    pad_batch,
    pad_token_id,
    prefix_token_id,
)

TokenPair = tuple[tuple[int, ...], tuple[int, ...]]

# Per tokenizer, text -> ids. The search scores the same task texts thousands of times, and on
# tiny models tokenising them was a quarter of the run time. (Stale if tokens are added later.)
_ENCODINGS: weakref.WeakKeyDictionary[Any, dict[str, tuple[int, ...]]] = weakref.WeakKeyDictionary()
_CACHE_LIMIT = 1_000_000


def encode_texts(tokenizer: Any, texts: Sequence[str]) -> list[tuple[int, ...]]:
    """Ids of each text with the tokenizer's own special tokens, as ``tokenizer.encode``."""
    try:
        cache = _ENCODINGS.setdefault(tokenizer, {})
    except TypeError:  # not weak-referenceable: no caching
        cache = {}
    missing = list(dict.fromkeys(t for t in texts if t not in cache))
    if missing:
        if len(cache) + len(missing) > _CACHE_LIMIT:
            cache.clear()
        # One batched call: the fast tokenizer encodes the list in Rust.
        cache.update(zip(missing, map(tuple, tokenizer(missing)["input_ids"]), strict=True))
    return [cache[t] for t in texts]


def encode_pair(tokenizer: Any, context: str, continuation: str) -> TokenPair:
    """Token ids of (context, continuation), split exactly as lm-eval's ``HFLM._encode_pair``."""
    return encode_pairs(tokenizer, [(context, continuation)])[0]


def encode_pairs(tokenizer: Any, pairs: Sequence[tuple[str, str]]) -> list[TokenPair]:
    """`encode_pair` for many pairs, with all strings tokenised in one batch."""
    split = [_move_trailing_space(ctx, cont) for ctx, cont in pairs]
    texts = [text for ctx, cont in split if ctx for text in (ctx, ctx + cont)]
    ids = dict(zip(texts, encode_texts(tokenizer, texts), strict=True))
    out: list[TokenPair] = []
    for ctx, cont in split:
        if not ctx:
            out.append(_empty_context_pair(tokenizer, cont))
            continue
        # Encode the whole string and cut at the context's length, so a token spanning the
        # boundary goes to the continuation instead of being split in two.
        whole, n_context = ids[ctx + cont], len(ids[ctx])
        out.append((whole[:n_context], whole[n_context:]))
    return out


def _move_trailing_space(context: str, continuation: str) -> tuple[str, str]:
    n_spaces = len(context) - len(context.rstrip())
    if not n_spaces:
        return context, continuation
    return context[:-n_spaces], context[-n_spaces:] + continuation


def _empty_context_pair(tokenizer: Any, continuation: str) -> TokenPair:
    cont = tokenizer.encode(continuation, add_special_tokens=False)
    prefix = prefix_token_id(tokenizer)
    if cont and cont[0] == prefix:
        return (cont[0],), tuple(cont[1:])
    return (prefix,), tuple(cont)


@torch.inference_mode()
def loglikelihoods(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[tuple[str, str]],
    *,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    max_length: int | None = None,
) -> list[float]:
    """Summed log p(continuation | context) for each (context, continuation) pair.

    Inputs longer than `max_length` (default: the model's context length) lose their start.
    """
    encoded = encode_pairs(tokenizer, pairs)
    return token_loglikelihoods(
        model,
        encoded,
        pad_id=pad_token_id(tokenizer),
        batch_size=batch_size,
        device=device,
        max_length=max_length or model_max_length(model, tokenizer),
    )


@torch.inference_mode()
def token_loglikelihoods(
    model: Any,
    encoded: Sequence[TokenPair],
    *,
    pad_id: int,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    max_length: int | None = None,
) -> list[float]:
    """Summed continuation log-probs for tokenised pairs; `max_length=None` never truncates."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    unique = sorted(set(encoded), key=lambda p: (-len(p[0]) - len(p[1]), p))
    scores: dict[TokenPair, float] = {}
    for start in range(0, len(unique), batch_size):
        chunk = unique[start : start + batch_size]
        rows = [_model_input(ctx, cont, max_length) for ctx, cont in chunk]
        sums = _score_rows(model, rows, pad_id, torch.device(device))
        scores.update(zip(chunk, sums, strict=True))
    return [scores[p] for p in encoded]


def _model_input(
    context: tuple[int, ...], continuation: tuple[int, ...], max_length: int | None
) -> tuple[list[int], list[int]]:
    """(input ids, target ids): the last ``len(targets)`` inputs each predict one target."""
    if not continuation:
        return [], []
    whole = list(context + continuation)
    inputs = whole[:-1]
    if max_length is not None and len(inputs) > max_length:
        inputs = inputs[-max_length:]
    return inputs, list(continuation[-len(inputs) :])


def _score_rows(
    model: Any, rows: Sequence[tuple[list[int], list[int]]], pad_id: int, device: torch.device
) -> list[float]:
    """Summed log-probs of each row's targets (0.0 for a row with nothing to score)."""
    live = [i for i, (inputs, _) in enumerate(rows) if inputs]
    sums = [0.0] * len(rows)
    if live:
        token_lp, owner = _target_logprobs(model, [rows[i] for i in live], pad_id, device)
        per_row = torch.zeros(len(live), dtype=torch.float64, device=device)
        per_row.index_add_(0, owner, token_lp.double())
        for i, value in zip(live, per_row.tolist(), strict=True):
            sums[i] = value
    return sums


def _target_logprobs(
    model: Any, rows: Sequence[tuple[list[int], list[int]]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass over right-padded ``(inputs, targets)`` rows, in which the last
    ``len(targets)`` inputs each predict one target. Returns the log-prob of every target, row
    by row in order, and the row each belongs to."""
    ids, mask = pad_batch([inputs for inputs, _ in rows], pad_id, "right", device)
    logits = forward_logits(model, ids, mask)
    row_idx: list[int] = []
    pos_idx: list[int] = []
    targets: list[int] = []
    for b, (inputs, tgt) in enumerate(rows):
        row_idx += [b] * len(tgt)
        pos_idx += range(len(inputs) - len(tgt), len(inputs))
        targets += tgt
    # Normalise only the positions that are scored: a full [batch, seq, vocab] softmax is waste.
    picked = torch.log_softmax(logits[row_idx, pos_idx], dim=-1)
    target_t = torch.as_tensor(targets, device=device).unsqueeze(1)
    return picked.gather(1, target_t).squeeze(1), torch.as_tensor(row_idx, device=device)


def rolling_windows(n_tokens: int, window: int) -> list[tuple[int, int, int]]:
    """``(input_start, target_start, target_end)`` over ``[prefix] + tokens``.

    Targets are disjoint blocks of `window` tokens, so every token is scored exactly once.
    Inputs are ``seq[target_end - window : target_end]`` (clamped at 0), so the last, short block
    keeps a full window of preceding context: lm-eval's ``loglikelihood_rolling`` scheme.
    """
    out = []
    for target_start in range(0, n_tokens, window):
        target_end = min(target_start + window, n_tokens)
        out.append((max(0, target_end - window), target_start, target_end))
    return out


@torch.inference_mode()
def rolling_token_logprobs(
    model: Any,
    tokenizer: Any,
    text: str,
    *,
    window: int | None = None,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    max_windows: int | None = None,
) -> list[float]:
    """Log-prob of every token of `text` (first one conditioned on BOS/EOS), window by window.

    `window` defaults to the model's context length; `max_windows` keeps only the first ones.
    """
    window = window or model_max_length(model, tokenizer)
    tokens = tokenizer.encode(text, add_special_tokens=False)
    seq = [prefix_token_id(tokenizer)] + list(tokens)
    spans = rolling_windows(len(tokens), window)[:max_windows]
    rows = [(seq[a:t_end], tokens[t_start:t_end]) for a, t_start, t_end in spans]
    out: list[float] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        token_lp, _ = _target_logprobs(model, chunk, pad_token_id(tokenizer), torch.device(device))
        out += token_lp.tolist()
    return out
