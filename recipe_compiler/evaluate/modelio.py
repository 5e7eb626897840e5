"""Talking to a causal LM: padding, one forward pass, and facts about model and tokenizer.

Consumes any module that behaves like an HF causal LM, called only as
``model(input_ids=..., attention_mask=..., position_ids=...)`` and read only through
``.logits`` (models assembled in memory by the search have no ``generate``), and an HF tokenizer.
Produces padded tensors and float32 logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

# Used when neither the model config nor the tokenizer states a usable context length.
DEFAULT_MAX_LENGTH = 2048
# Tokenizers without a real limit report a huge sentinel (int(1e30)); ignore those.
_TOKENIZER_LIMIT_SENTINEL = 1_000_000


def pad_token_id(tokenizer: Any) -> int:
    """The id used for padding; its value never matters because padding is masked."""
    for tok_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tok_id is not None:
            return int(tok_id)
    return 0


def prefix_token_id(tokenizer: Any) -> int:
    """What an empty context conditions on: BOS, else EOS (as lm-eval-harness does)."""
    for tok_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if tok_id is not None:
            return int(tok_id)
    return pad_token_id(tokenizer)


def model_max_length(model: Any, tokenizer: Any) -> int:
    """Longest sequence the model accepts, from its config, else the tokenizer, else a default."""
    config = getattr(model, "config", None)
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < _TOKENIZER_LIMIT_SENTINEL:
        return limit
    return DEFAULT_MAX_LENGTH


def pad_batch(
    seqs: Sequence[Sequence[int]],
    pad_id: int,
    side: Literal["left", "right"],
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack token lists into ``(input_ids, attention_mask)`` padded on `side`."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        span = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        ids[row, span] = torch.as_tensor(seq, dtype=torch.long)
        mask[row, span] = 1
    return ids.to(device), mask.to(device)


def forward_logits(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Float32 logits ``[batch, seq, vocab]`` for a padded batch.

    Positions are counted from each row's first real token, so a left-padded row sees the same
    positions (and so the same rotary embeddings) as it would unpadded.
    """
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
    return out.logits.float()
