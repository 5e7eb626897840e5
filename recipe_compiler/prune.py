"""Single-model layer pruning baselines: which layers to drop, from calibration data.

Consumes: a loaded Hugging Face causal LM, its architecture, and calibration texts.
Produces: the set of layer indices to drop, by one of four published methods:

- `block-influence` (ShortGPT, Men et al. 2024): BI_i = 1 - mean over tokens of
  cos(x_i, x_{i+1}), x_i the input and x_{i+1} the output hidden state of layer i; the k
  lowest go.
- `angular` (Gromov et al. 2024): d(l, n) = arccos(cos(x_l, x_{l+n})) / pi between the inputs of
  layers l and l+n, at each sequence's last token, averaged; the block [l, l+n) with the
  smallest distance goes.
- `ppl` (Shortened LLaMA, Kim et al. 2024): perplexity of the calibration text with each single
  layer removed; the k whose removal hurts least go.
- `sleb` (Song et al. 2024): the same, greedily: remove the least harmful layer, re-score the
  rest on the pruned model, repeat k times.

Hidden states come from forward hooks on the decoder layers (raw layer outputs: the last
element of transformers' `hidden_states` already has the final norm applied, so it is not
used), in float32, with padding masked out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import torch

from recipe_compiler.models.arch import Architecture

METHODS = ("block-influence", "angular", "ppl", "sleb")


def layer_list(model: torch.nn.Module, arch: Architecture) -> torch.nn.ModuleList:
    """The decoder layers: `model.layers.{i}.` names the module list `model.layers`."""
    module = model
    for part in arch.layer_prefix.split(".{i}.")[0].split("."):
        module = getattr(module, part)
    return module


@contextmanager
def _layers_as(model: torch.nn.Module, arch: Architecture, modules: list[torch.nn.Module]):
    """Run the model with `modules` as its decoder-layer list, then put its own back."""
    layers = layer_list(model, arch)
    parent, name = _parent_of(model, arch)
    setattr(parent, name, torch.nn.ModuleList(modules))
    try:
        yield
    finally:
        setattr(parent, name, layers)


def without_layers(model: torch.nn.Module, arch: Architecture, drop: set[int]):
    """Run the model with some layers skipped (in memory; nothing is copied)."""
    layers = layer_list(model, arch)
    return _layers_as(model, arch, [layer for i, layer in enumerate(layers) if i not in drop])


def _parent_of(model: torch.nn.Module, arch: Architecture):
    parts = arch.layer_prefix.split(".{i}.")[0].split(".")
    parent = model
    for part in parts[:-1]:
        parent = getattr(parent, part)
    return parent, parts[-1]


def encode(tokenizer, texts: Sequence[str], max_length: int, device) -> dict:
    """Right-padded batch of calibration texts, truncated to the model's context."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    batch = tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True,
                      max_length=max_length)
    return {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}


@torch.no_grad()
def layer_states(model, arch: Architecture, batch: dict) -> list[torch.Tensor]:
    """[x_0, ..., x_L]: the input of every layer and the output of the last, float32."""
    layers = layer_list(model, arch)
    states: list[torch.Tensor | None] = [None] * (len(layers) + 1)

    def keep(i: int) -> Callable:
        def hook(module, args, kwargs, output):
            if i == 0:
                states[0] = (args[0] if args else kwargs["hidden_states"]).float()
            out = output[0] if isinstance(output, tuple) else output
            states[i + 1] = out.float()
        return hook

    handles = [layer.register_forward_hook(keep(i), with_kwargs=True)
               for i, layer in enumerate(layers)]
    try:
        model(**batch, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return states  # type: ignore[return-value]


def block_influence(model, arch: Architecture, batch: dict) -> list[float]:
    states = layer_states(model, arch, batch)
    real = batch["attention_mask"].bool()
    out = []
    for i in range(len(states) - 1):
        cos = torch.nn.functional.cosine_similarity(states[i], states[i + 1], dim=-1)  # (B, T)
        out.append(float((1 - cos)[real].mean()))
    return out


def angular_distances(model, arch: Architecture, batch: dict, n: int) -> list[float]:
    """d(l) for every block [l, l+n), averaged over sequences, at each one's last token."""
    states = layer_states(model, arch, batch)
    last = batch["attention_mask"].sum(-1) - 1  # (B,)
    rows = torch.arange(last.shape[0], device=last.device)
    at_last = [s[rows, last] for s in states]  # each (B, C)
    out = []
    for start in range(len(states) - n):
        cos = torch.nn.functional.cosine_similarity(at_last[start], at_last[start + n], dim=-1)
        out.append(float((torch.arccos(cos.clamp(-1, 1)) / math.pi).mean()))
    return out


@torch.no_grad()
def perplexity(model, batch: dict) -> float:
    """exp(mean next-token NLL over real tokens)."""
    logits = model(**batch, use_cache=False).logits.float()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
    valid = mask[:, 1:].bool() & mask[:, :-1].bool()
    return float(torch.exp(-logp[valid].mean()))


def ppl_without_each(model, arch: Architecture, batch: dict, dropped: set[int]) -> dict[int, float]:
    """The perplexity with each layer not yet `dropped` removed too. The layers before the
    removed one are not all run again: one pass of the pruned model keeps kept layers'
    inputs (every one's when they fit in `KEPT_STATES_BYTES`, else evenly spaced ones), and
    a run without layer i starts from the nearest kept input at or before i (a stand-in
    first layer returns it), runs the layers from there to i, skips i and goes on. The
    same operations on the same tensors as running the whole model without i, so the same
    values, for about half the layer calls when every input fits; a model whose layers
    differ in configuration (e.g. sliding-window attention on some) is run whole."""
    n = len(layer_list(model, arch))
    kept = [i for i in range(n) if i not in dropped]
    inputs = _kept_inputs(model, arch, batch, dropped)
    out = {}
    for pos, i in enumerate(kept):
        start = max((p for p in inputs if p <= pos), default=0) if inputs else 0
        if start == 0:
            with without_layers(model, arch, dropped | {i}):
                out[i] = perplexity(model, batch)
        else:  # from the input of kept layer `start`, through the kept layers but i
            rest = kept[start:pos] + kept[pos + 1:]
            with _starting_from(model, arch, inputs[start], rest):
                out[i] = perplexity(model, batch)
    return out


class _Given(torch.nn.Module):
    """A stand-in first decoder layer: returns a hidden state computed before, in the form
    the model's layers return theirs, whatever it is given."""

    def __init__(self, state, like: torch.nn.Module):
        super().__init__()
        self.state = state
        for attr in ("attention_type", "layer_idx"):  # what a model's loop may read
            if hasattr(like, attr):
                setattr(self, attr, getattr(like, attr))

    def forward(self, *args, **kwargs):
        if isinstance(self.state, tuple):  # a copy: the next layers must not write into it
            return (self.state[0].clone(), *self.state[1:])
        return self.state.clone()


KEPT_STATES_BYTES = 2**30  # what `ppl_without_each` may hold of kept layers' inputs


def _kept_inputs(model, arch: Architecture, batch: dict, dropped: set[int]) -> dict:
    """Kept layer position -> its input as the model without `dropped` computes it (the
    object the layer before returned), for evenly spaced positions, as many as fit in
    `KEPT_STATES_BYTES` (all of them for a small model or a short text; none for a batch
    whose one hidden state is larger); empty when the layers' configuration is not
    uniform."""
    config = getattr(model, "config", None)
    if config is not None and not arch.uniform_layers(config.to_dict()):
        return {}
    layers = layer_list(model, arch)
    kept = [layer for i, layer in enumerate(layers) if i not in dropped]
    ids = batch["input_ids"]
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", 0)
    dtype = next(model.parameters()).dtype
    one = ids.numel() * max(int(hidden), 1) * torch.empty((), dtype=dtype).element_size()
    room = min(len(kept) - 1, KEPT_STATES_BYTES // max(one, 1))
    if room < 1:
        return {}
    # positions 1..len-1 (position 0's input is the embeddings: a whole run), evenly spaced
    wanted = {1 + (j * (len(kept) - 1)) // room for j in range(room)}
    outputs: dict = {}

    def keep(pos: int) -> Callable:
        def hook(module, args, kwargs, output):
            outputs[pos + 1] = output  # the input of kept layer pos + 1
        return hook

    handles = [layer.register_forward_hook(keep(pos), with_kwargs=True)
               for pos, layer in enumerate(kept) if pos + 1 in wanted]
    try:
        with without_layers(model, arch, dropped), torch.no_grad():
            model(**batch, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return outputs


def _starting_from(model: torch.nn.Module, arch: Architecture, state, rest: list[int]):
    """Run the model as its layers `rest`, after a first layer that returns `state`."""
    layers = layer_list(model, arch)
    stand_in = _Given(state, layers[rest[0]] if rest else layers[0])
    return _layers_as(model, arch, [stand_in, *(layers[j] for j in rest)])


def choose_drops(method: str, model, arch: Architecture, batch: dict, k: int,
                 on_step: Callable[[str], None] | None = None) -> tuple[set[int], dict]:
    """The k layers `method` drops, and the scores it ranked them by (for the report)."""
    n = len(layer_list(model, arch))
    if not 0 < k < n:
        raise ValueError(f"cannot remove {k} of {n} layers")
    if method == "block-influence":
        bi = block_influence(model, arch, batch)
        return set(sorted(range(n), key=lambda i: (bi[i], i))[:k]), {"block_influence": bi}
    if method == "angular":
        d = angular_distances(model, arch, batch, k)
        start = min(range(len(d)), key=lambda i: (d[i], i))
        return set(range(start, start + k)), {"angular_distance": d}
    if method == "ppl":
        p = ppl_without_each(model, arch, batch, set())
        return set(sorted(p, key=lambda i: (p[i], i))[:k]), {"ppl_without": p}
    if method == "sleb":
        dropped: set[int] = set()
        steps = []
        for _ in range(k):
            p = ppl_without_each(model, arch, batch, dropped)
            best = min(p, key=lambda i: (p[i], i))
            dropped.add(best)
            steps.append({"removed": best, "ppl": p[best]})
            if on_step is not None:
                on_step(f"removed layer {best} (ppl {p[best]:.3f})")
        return dropped, {"steps": steps}
    raise ValueError(f"unknown method {method!r} (known: {', '.join(METHODS)})")


def removal_count(spec: str, n_layers: int) -> int:
    """'25%' of the layers (rounded), or a plain count."""
    spec = spec.strip()
    if spec.endswith("%"):
        return round(float(spec[:-1]) / 100 * n_layers)
    return int(spec)


def calibration_texts(path, samples: int) -> list[str]:
    """Texts from a .txt file (one per non-empty line) or a task file (context + gold
    answer, the text a model of the task should find likely): the first `samples`.

    The file is read as task files are (a regular UTF-8 file of bounded size, see
    `evaluate.tasks`); any problem, a file with no text included, is a `TaskError`."""
    from pathlib import Path

    from recipe_compiler.evaluate import TaskError, load_task
    from recipe_compiler.evaluate.tasks import read_task_text

    path = Path(path)
    if path.suffix == ".txt":
        texts = text_lines(read_task_text(path))
        if not texts:
            raise TaskError(path, None, "no calibration text (every line is blank)")
        return texts[:samples]
    return [item_text(it) for it in load_task(path).items][:samples]


def text_lines(text: str) -> list[str]:
    """A calibration text file's texts: its non-blank lines, stripped."""
    return [ln for ln in (ln.strip() for ln in text.splitlines()) if ln]


def item_text(item) -> str:
    """A task item as calibration text: a multiple-choice item's context with its gold
    choice, a generation item's prompt with its answer (what a model of the task should
    find likely)."""
    from recipe_compiler.evaluate import McItem

    if isinstance(item, McItem):
        return item.context + item.choices[item.gold]
    return item.prompt + item.answer


def drop_recipe(model_name: str, model_path: str, n_layers: int, drops: set[int],
                header: list[str]):
    """A drop-only recipe over one model: runs of kept slots take the model's own layers."""
    import dataclasses

    from recipe_compiler.language.recipe import Drop, ModelDecl, Recipe, SlotDecl, Take

    decls, start = [], 0
    for i in range(1, n_layers + 1):
        if i == n_layers or (i in drops) != (start in drops):
            op = Drop() if start in drops else Take(model_name)
            decls.append(SlotDecl(start, i, op))
            start = i
    recipe = Recipe(models=(ModelDecl(model_name, model_path),), slots=tuple(decls))
    return dataclasses.replace(recipe, comments=(("header", tuple(f"# {h}" for h in header),
                                                  None),))
