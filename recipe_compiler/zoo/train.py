"""Training loop for the zoo: a tiny Llama base on a skill mixture, then per-skill fine-tunes.

Consumes training pools from ``skills.training_pools`` and a ``ZooSize``; produces trained
``LlamaForCausalLM`` modules in memory (saving is the caller's job). The loss covers only
answers (plus the newline that ends them) and plain text: the prompts of synthetic tasks are
random, so learning to predict them would only spend the tiny budget on noise.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from recipe_compiler.zoo.skills import Pair

IGNORE = -100


@dataclass(frozen=True)
class ZooSize:
    """Model shape and step counts; ``FULL`` fits the CPU budget, ``QUICK`` is for tests."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    seq_len: int
    batch: int
    base_steps: int
    finetune_steps: int
    base_lr: float
    finetune_lr: float
    pool_size: int  # training pairs per skill
    n_test: int
    n_val: int
    # Zoo v2: the share of each fine-tune batch drawn from the base's own data (skills and
    # text), and whether fine-tunes train the decoder layers only. 0.0 / False is zoo v1.
    replay: float = 0.0
    decoder_only: bool = False


# Narrow and many small steps learns these skills far better per CPU-second than wide and few
# (measured: hidden 128 x 160 steps of 64 left code/strings near 0; hidden 64 x 600 steps of
# 32 teaches the fine-tunes their skill to 54-100%). The fine-tunes stay in the base's basin
# (docs/zoo.md, "Zoo v2"): a lower rate, half of every batch replayed from the base's data, and
# only the decoder layers trained, which are all a recipe can take or merge (embeddings, final
# norm and head come from the base model).
FULL = ZooSize(hidden=64, intermediate=192, layers=12, heads=4, seq_len=32, batch=32,
               base_steps=600, finetune_steps=250, base_lr=3e-3, finetune_lr=1e-3,
               pool_size=8000, n_test=250, n_val=150, replay=0.5, decoder_only=True)
QUICK = ZooSize(hidden=16, intermediate=32, layers=12, heads=2, seq_len=32, batch=4,
                base_steps=4, finetune_steps=2, base_lr=3e-3, finetune_lr=3e-3,
                pool_size=200, n_test=20, n_val=10, replay=0.5, decoder_only=True)


@dataclass(frozen=True)
class Replay:
    """Rows drawn from the base's own mixture while fine-tuning, ``fraction`` of each batch."""

    names: tuple[str, ...]
    fraction: float


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # input_ids, attention_mask, labels
StepCallback = Callable[[int, int, float], None]  # (step, total, loss)


def make_model(size: ZooSize, tokenizer: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
    """A freshly initialised Llama whose weights depend only on ``seed`` and ``size``."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=size.hidden,
        intermediate_size=size.intermediate,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.heads,
        # The evaluator sizes perplexity windows from this, and RoPE positions beyond the
        # training length were never seen, so advertise exactly the trained context.
        max_position_embeddings=size.seq_len,
        tie_word_embeddings=True,  # halves the embedding parameters of a tiny model
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def make_batch(pools: Mapping[str, list[Pair]], names: list[str], size: ZooSize,
               char_ids: Mapping[str, int], bos_id: int, pad_id: int, rng: random.Random,
               replay: Replay | None = None) -> list[Batch]:
    """``batch`` rows as one or two right-padded ``(input_ids, attention_mask, labels)``.

    A skill row is one example, ``<bos> prompt answer \\n``, exactly what the evaluator feeds
    the model; the loss covers only the answer and its newline. One example per row (rather
    than packing many) matters: at initialisation attention is uniform over the row, so in a
    64-token packed row the few tokens an answer depends on get a tiny share of the gradient,
    and the 12-layer model sat on a plateau for the whole budget. A text row is a run of
    sentences, ``seq_len`` characters long, supervised everywhere; a quarter of them start
    mid-stream without ``<bos>``, as later rolling-perplexity windows do. With ``replay``,
    each row comes from ``replay.names`` with probability ``replay.fraction`` instead.
    """
    rows: list[list[int]] = []
    labels: list[list[int]] = []
    is_text: list[bool] = []
    for _ in range(size.batch):
        group = names
        if replay is not None and rng.random() < replay.fraction:
            group = list(replay.names)  # only drawn with replay on: the base's stream is kept
        name = group[rng.randrange(len(group))]
        prompt, answer = rng.choice(pools[name])
        if answer:
            p = [bos_id] + [char_ids[c] for c in prompt]
            a = [char_ids[c] for c in answer + "\n"]
            ids, lab = p + a, [IGNORE] * len(p) + a
        else:
            cut = rng.randint(1, 16) if rng.random() < 0.25 else 0
            text = prompt + "\n"
            while len(text) < size.seq_len + cut:
                text += rng.choice(pools[name])[0] + "\n"
            chars = [char_ids[c] for c in text[: size.seq_len + cut]]
            ids = ([bos_id] + chars)[cut : cut + size.seq_len]
            lab = ([IGNORE] + chars)[cut : cut + size.seq_len]
        is_text.append(not answer)
        rows.append(ids[: size.seq_len])
        labels.append(lab[: size.seq_len])
    # Pad skill rows and text rows separately: text rows are 2-3x longer, and padding the
    # short rows up to them would double the cost of a step for nothing.
    out = []
    for kind in (False, True):
        picked = [i for i, t in enumerate(is_text) if t == kind]
        if picked:
            out.append(_pad([rows[i] for i in picked], [labels[i] for i in picked], pad_id))
    return out


def _pad(rows: list[list[int]], labels: list[list[int]], pad_id: int) -> Batch:
    width = max(map(len, rows))
    x = torch.full((len(rows), width), pad_id)
    y = torch.full((len(rows), width), IGNORE)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, lab) in enumerate(zip(rows, labels)):
        x[i, : len(r)] = torch.tensor(r)
        y[i, : len(r)] = torch.tensor(lab)
        mask[i, : len(r)] = 1
    return x, mask, y


def train(model: LlamaForCausalLM, pools: Mapping[str, list[Pair]], names: list[str],
          size: ZooSize, steps: int, lr: float, tokenizer: PreTrainedTokenizerFast, seed: int,
          on_step: StepCallback | None = None, *, replay: Replay | None = None,
          layers: tuple[int, ...] | None = None) -> float:
    """Train in place on a uniform mixture of ``names``; return the final loss.

    ``replay`` mixes rows of the base's own data into every batch; ``layers`` trains only
    those decoder layers (everything else frozen), ``None`` trains all parameters.
    """
    rng = random.Random(f"tailor-zoo/batches/{seed}/{'+'.join(names)}")
    every = [*names, *(replay.names if replay else ())]
    char_ids = {c: tokenizer.convert_tokens_to_ids(c) for c in _alphabet(pools, every)}
    bos, pad = int(tokenizer.bos_token_id), int(tokenizer.pad_token_id)
    params = _trainable(model, layers)
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    warmup = max(1, steps // 10)

    def schedule(step: int) -> float:
        # Short linear warmup then cosine to 10%: the usual recipe, stable at a high peak LR.
        if step < warmup:
            return (step + 1) / warmup
        frac = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.45 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    model.train()
    loss_val = float("nan")
    for step in range(steps):
        parts = make_batch(pools, names, size, char_ids, bos, pad, rng, replay)
        n_targets = sum(int((y[:, 1:] != IGNORE).sum()) for _, _, y in parts)
        total = 0.0
        for x, mask, y in parts:
            logits = model(input_ids=x, attention_mask=mask).logits[:, :-1]
            # Summed, then divided by all targets of the step: the mean over the whole batch,
            # as if it had been one forward pass.
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), y[:, 1:].reshape(-1),
                ignore_index=IGNORE, reduction="sum") / n_targets
            loss.backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss_val = total
        if on_step is not None:
            on_step(step + 1, steps, loss_val)
    model.eval()
    return loss_val


def _trainable(model: LlamaForCausalLM, layers: tuple[int, ...] | None
               ) -> list[torch.nn.Parameter]:
    if layers is None:
        return list(model.parameters())
    model.requires_grad_(False)
    for i in layers:
        model.model.layers[i].requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def _alphabet(pools: Mapping[str, list[Pair]], names: list[str]) -> set[str]:
    return {c for n in names for p, a in pools[n] for c in p + a + "\n"}
