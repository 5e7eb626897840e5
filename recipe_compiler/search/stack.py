"""A candidate's model, run by transformers' own code with layers from the store.

Consumes: the space's models (headers), the store (`search.store.LayerStore`), the base's
architecture (`models/arch/*.json`: where the decoder-layer list lives).
Produces: `Stack`, which runs a list of layers — (key, op, source layer) — over a batch and
returns the last hidden state after the final norm, and the output head; and, for the
pruning heuristics, a Hugging Face model running a given recipe.

The model is the base's own class, built once from its config with one layer, given the
base's non-layer tensors (embeddings, final norm, head, and buffers computed from the config
such as rotary frequencies); its decoder-layer list is then replaced by `_Slot`s. Every
forward goes through the model's own `forward`: transformers builds the attention mask, the
position ids and the rotary inputs exactly as it does for the built checkpoint, for every
architecture `build` supports. Each `_Slot` runs a decoder layer of the right class (one
"template" per source layer, on the meta device: it holds no memory) with the candidate's
parameters from the store, bound into its parameter slots for the call and unbound after
(what `torch.func.functional_call` does, without its search of the module tree per call).

Layers whose output is cached (the same first k layers, the same batch) are not run: the
first slot returns the cached hidden state and the next k-1 pass it through; the mask and
positions do not depend on hidden states, so the result is identical.

`Stack.hidden_many` runs several candidates over one batch as a tree (a trie over their
layer keys): each distinct prefix of layers runs once, and the prefixes that continue with
the same layer at the same recipe slot go through it together, their rows stacked along the
batch dimension, so a layer whose definition many candidates share costs one call, not one per
candidate. The model's own forward still builds the mask and rotary inputs (once, for one
copy of the batch); a slot repeats them along the batch dimension for the stacked rows.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import contextmanager

import torch

from recipe_compiler.execute.assemble import hf_renamer
from recipe_compiler.models.index import ModelInfo, Models
from recipe_compiler.search.store import LayerStore


def _path(arch) -> list[str]:
    """`model.layers.{i}.` -> ["model", "layers"]."""
    return arch.layer_prefix.split(".{i}.")[0].split(".")


def _set_layers(model: torch.nn.Module, arch, layers: torch.nn.ModuleList) -> None:
    parts = _path(arch)
    parent = model.get_submodule(".".join(parts[:-1])) if len(parts) > 1 else model
    setattr(parent, parts[-1], layers)


class _Slot(torch.nn.Module):
    """One place in the decoder-layer list; what it runs is set per forward by `Stack`."""

    def __init__(self, stack: Stack, index: int):
        super().__init__()
        self._stack = [stack]  # a list: not registered as a submodule
        self.index = index

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self._stack[0].run_slot(self.index, hidden_states, args, kwargs)


class Stack:
    """The base model's architecture, running whatever layers a candidate names."""

    def __init__(self, models: Models, base: str, store: LayerStore):
        from transformers import AutoConfig

        self.models, self.store = models, store
        self.base: ModelInfo = models[base]
        self.arch = self.base.arch
        self.config = AutoConfig.from_pretrained(self.base.path)
        # The built checkpoint has the base's config (its per-layer lists taken at each
        # slot's source layer), whoever's weights a slot holds: so do these layers.
        self.templates = self._templates(self.base)
        self._bindings: dict[int, list[tuple[torch.nn.Module, str, str, torch.Tensor]]] = {}
        self.model = self._shell()
        self.slots: list[_Slot] = []
        self._run: _Run | None = None
        self.layers_run = 0  # decoder layers actually run, over the stack's life
        self.layer_tokens = 0  # and the tokens they ran on, summed
        self.layer_calls = 0  # calls into a decoder layer (a stacked call runs several)

    # --- construction --------------------------------------------------------------------

    def _templates(self, info: ModelInfo) -> list[torch.nn.Module]:
        """Each decoder layer of `info`'s model on the meta device (classes and per-layer
        settings such as an attention type; no memory)."""
        from transformers import AutoConfig, AutoModelForCausalLM

        from recipe_compiler.prune import layer_list

        config = AutoConfig.from_pretrained(info.path)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        return list(layer_list(model.eval(), info.arch))  # eval: no dropout

    def _shell(self) -> torch.nn.Module:
        from transformers import AutoModelForCausalLM

        config = copy.deepcopy(self.config)
        self._layer_config(config, [0])
        with torch.device(self.store.device):
            model = AutoModelForCausalLM.from_config(config, dtype=self.store.dtype)
        model.eval()
        # No KV cache: a slot's template keeps its source layer's index, which a cache
        # sized for the candidate's layer count would not have.
        model.config.use_cache = False
        _set_layers(model, self.arch, torch.nn.ModuleList())
        rename = hf_renamer(model)
        stored = self.store.tensors(self.base.name, list(self.base.non_layer()))
        values = {rename(k): v for k, v in stored.items()}
        missing, unexpected = model.load_state_dict(values, strict=False)
        params = dict(model.named_parameters(remove_duplicate=False))
        loaded = {id(params[n]) for n in values if n in params}
        left = [m for m in missing if m not in params or id(params[m]) not in loaded]
        if unexpected or left:  # check.py validated the names: this is a bug, not the user's
            raise ValueError(f"'{self.base.name}': the model class and the checkpoint "
                             f"disagree ({', '.join((unexpected + left)[:3])})")
        self.suffixes = self._layer_names(rename)
        inner = model.base_model
        if hasattr(inner, "has_sliding_layers"):  # decided at init from the 1-layer config
            inner.has_sliding_layers = "sliding_attention" in (
                self.base.config.get("layer_types") or [])
        return model

    def _layer_names(self, rename: Callable[[str], str]) -> dict[str, str]:
        """Checkpoint name -> the decoder layer's parameter name, for every tensor of a
        layer (transformers renames some on load, e.g. GPT-NeoX's `embed_out`)."""
        prefix = self.arch.layer_prefix.format(i=0)
        names = {}
        for suffix in self.base.layer(0):
            renamed = rename(prefix + suffix)
            names[suffix] = renamed[len(prefix):] if renamed.startswith(prefix) else suffix
        wanted = {n for n, _ in self.templates[0].named_parameters()}
        if set(names.values()) != wanted:
            odd = sorted(wanted ^ set(names.values()))
            raise ValueError(f"'{self.base.name}': its layers' tensors do not match the "
                             f"{type(self.templates[0]).__name__} class ({', '.join(odd[:3])})")
        return names

    def _layer_config(self, config, sources: list[int]) -> None:
        """Give `config` the layer count and per-layer lists (e.g. `layer_types`) of a stack
        of the base's source layers `sources`, as `compiler.plan` writes the built config."""
        setattr(config, self.arch.num_layers_key, len(sources))
        for key in self.arch.per_layer_config:
            values = self.base.config.get(key)
            if isinstance(values, list) and len(values) == self.base.num_layers:
                setattr(config, key, [values[i] for i in sources])

    # --- running -------------------------------------------------------------------------

    @property
    def head(self) -> torch.nn.Module:
        return self.model.get_output_embeddings()

    def hidden(self, layers: list[tuple[tuple, object, int]], ids: torch.Tensor,
               mask: torch.Tensor, *, cache_key: Callable[[int], object] | None = None,
               keep: bool = True, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Last hidden state (final norm applied) of `ids` through `layers`; with
        `cache_key(k)` (the key of the first k layers' output), cached outputs are reused
        and new ones kept. `mask` is (B, T) padding, or a prepared (B, 1, T, T) additive
        mask with its `position_ids`, which transformers uses as given."""
        run = _Run(layers, cache_key, keep)
        run.start, run.cached = _deepest_cached(self.store, cache_key, len(layers))
        with self._running(run):
            out = self.model.base_model(input_ids=ids, attention_mask=mask,
                                        position_ids=position_ids, use_cache=False)
        return out.last_hidden_state

    def hidden_many(self, plans: list[list[tuple[tuple, object, int]]], ids: torch.Tensor,
                    mask: torch.Tensor, *, slots: list[list[int]],
                    cache_keys: list[Callable[[int], object]] | None = None,
                    keep: bool = True, position_ids: torch.Tensor | None = None,
                    group: int = 32) -> list[torch.Tensor]:
        """`hidden` of each plan, computed as a tree (see the module docstring): the same
        values in fewer, larger layer calls. `slots[i]` gives the recipe slot of each of
        plan i's layers (increasing): the layers of one slot that several plans share run
        together, whatever the depth each plan reaches them at. At most `group` plans run
        in one tree. A base whose layers differ in configuration (e.g. sliding-window
        attention on some) gets each plan run alone."""
        out: list[torch.Tensor | None] = [None] * len(plans)
        together = [i for i, plan in enumerate(plans) if plan] if self._uniform else []
        for i in sorted(set(range(len(plans))) - set(together)):
            out[i] = self.hidden(plans[i], ids, mask, keep=keep, position_ids=position_ids,
                                 cache_key=cache_keys[i] if cache_keys else None)
        rows = ids.shape[0]
        for lo in range(0, len(together), group):
            chunk = together[lo:lo + group]
            trie = _Trie([plans[i] for i in chunk], [slots[i] for i in chunk],
                         [cache_keys[i] for i in chunk] if cache_keys else None,
                         keep, self.store)
            with self._running(trie):
                h = self.model.base_model(input_ids=ids, attention_mask=mask,
                                          position_ids=position_ids,
                                          use_cache=False).last_hidden_state
            for j, i in enumerate(chunk):
                out[i] = h[j * rows:(j + 1) * rows]
        return out

    @property
    def _uniform(self) -> bool:
        """Whether every layer of the base has the same per-layer configuration, so that
        the inputs the model's forward prepares for one layer serve any layer."""
        return self.arch.uniform_layers(self.base.config)

    @contextmanager
    def _running(self, run: _Run | _Trie):
        sources = [src for _, _, src in run.layers]
        config = self.model.config
        saved = {k: getattr(config, k, None)
                 for k in (self.arch.num_layers_key, *self.arch.per_layer_config)}
        self._layer_config(config, sources)
        while len(self.slots) < len(run.layers):
            self.slots.append(_Slot(self, len(self.slots)))
        _set_layers(self.model, self.arch, torch.nn.ModuleList(self.slots[: len(run.layers)]))
        self._run = run
        try:
            yield
        finally:
            self._run = None
            for k, v in saved.items():
                setattr(config, k, v)

    def run_slot(self, index: int, h: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
        run = self._run
        assert run is not None, "a slot ran outside Stack.hidden"
        if isinstance(run, _Trie):
            return run.step(self, index, h, args, kwargs)
        if index < run.start:
            return run.cached if index == 0 else h
        key, op, src = run.layers[index]
        h = self.apply(op, src, h, args, kwargs, keep=run.keep)
        if run.cache_key is not None and run.keep:
            self.store.keep_activation(run.cache_key(index + 1), h)
        return h

    def apply(self, op, src: int, h: torch.Tensor, args: tuple, kwargs: dict, *,
              keep: bool, copies: int = 1) -> torch.Tensor:
        """Decoder layer `op` (at source layer `src`) over `h`: the rows of `copies` copies
        of the batch whose inputs `args` and `kwargs` are, stacked."""
        template = self.templates[src]
        stored = self.store.layer(op, src, keep=keep)
        if copies > 1:
            rows = h.shape[0] // copies
            args, kwargs = _repeat(args, copies, rows), _repeat(kwargs, copies, rows)
        binding = self._binding(src)
        for module, name, key, _ in binding:
            module._parameters[name] = stored[key]
        try:
            out = template(h, *args, **kwargs)
        finally:  # the template holds no layer's memory between calls
            for module, name, _, meta in binding:
                module._parameters[name] = meta
        h = out[0] if isinstance(out, tuple) else out
        self.layers_run += copies
        self.layer_calls += 1
        self.layer_tokens += h.shape[0] * h.shape[1]
        return h

    def _binding(self, src: int) -> list[tuple[torch.nn.Module, str, str, torch.Tensor]]:
        """(submodule, parameter name, checkpoint suffix, its meta tensor) for each tensor
        of template `src`, found once: a call then sets and resets a few dict entries."""
        found = self._bindings.get(src)
        if found is None:
            template = self.templates[src]
            found = []
            for suffix, name in self.suffixes.items():
                owner, _, attr = name.rpartition(".")
                module = template.get_submodule(owner) if owner else template
                found.append((module, attr, suffix, module._parameters[attr]))
            self._bindings[src] = found
        return found

    @contextmanager
    def as_model(self, layers: list[tuple[tuple, object, int]]):
        """The Hugging Face model running `layers` (no activation cache), for code that
        takes a model: the pruning heuristics' hooks and forward passes."""
        with self._running(_Run(layers, None, False)):
            yield self.model


class _Run:
    def __init__(self, layers, cache_key, keep: bool):
        self.layers, self.cache_key, self.keep = layers, cache_key, keep
        self.start, self.cached = 0, None


def _deepest_cached(store: LayerStore, cache_key: Callable[[int], object] | None,
                    n: int) -> tuple[int, torch.Tensor | None]:
    """(k, the hidden state after the first k layers) for the largest k <= n whose output
    the store holds under `cache_key(k)`; (0, None) when none is, or without a key."""
    if cache_key is not None:
        for k in range(n, 0, -1):
            h = store.activation(cache_key(k))
            if h is not None:
                return k, h
    return 0, None


def _repeat(value, copies: int, rows: int):
    """`value` (a layer's other inputs) with every per-row tensor — two or more dimensions,
    the first of `rows` entries, as masks, positions and rotary tables are — repeated
    `copies` times along dimension 0, for a call on that many stacked copies of the batch
    (a tensor with one entry there broadcasts, and stays as it is)."""
    if isinstance(value, torch.Tensor):
        if value.dim() >= 2 and value.shape[0] == rows and rows > 1:
            return value.repeat(copies, *[1] * (value.dim() - 1))
        return value
    if isinstance(value, (tuple, list)):
        return type(value)(_repeat(v, copies, rows) for v in value)
    if isinstance(value, dict):
        return {k: _repeat(v, copies, rows) for k, v in value.items()}
    return value


# On a CPU, rows x tokens per stacked call, at most (never fewer than one copy of the batch):
# beyond a few thousand tokens, a small layer's intermediates (the zoo's 192-wide MLP: 0.8
# MB per thousand tokens) leave the core's cache and a token costs up to twice as much.
STACKED_TOKENS = 2048


class _Trie:
    """Several plans over one batch, as a tree of their layer prefixes, all run from the
    model's first (and only) slot.

    Node 0 is the embeddings; every other node is a distinct prefix of layers, ending at a
    recipe slot. Only the nodes some plan needs are run: those after the deepest cached
    prefix of each plan (a cached node's hidden state is taken as is). Needed nodes run in
    the order of their slot, which increases along every plan, so a node's parent is always
    ready; the nodes of one slot with the same layer are one stacked call (`Stack.apply`
    with `copies`), and a node's state is dropped once its children have run."""

    def __init__(self, plans: list[list[tuple[tuple, object, int]]], slots: list[list[int]],
                 cache_keys: list[Callable[[int], object]] | None, keep: bool,
                 store: LayerStore):
        self.layers = plans[0][:1]  # the model runs one slot, which runs the whole tree
        self.keep, self.store = keep, store
        # per node: parent, op, source layer, slot, layer key, activation-cache key
        self.nodes: list[tuple] = [(None, None, None, -1, None, None)]
        index: dict[tuple, int] = {}  # (parent, layer key) -> node
        leaves: list[int] = []
        paths = []
        for c, (plan, where) in enumerate(zip(plans, slots)):
            node, path = 0, []
            for d, ((key, op, src), slot) in enumerate(zip(plan, where), start=1):
                child = index.get((node, key))
                if child is None:
                    child = index[(node, key)] = len(self.nodes)
                    ck = cache_keys[c](d) if cache_keys is not None else None
                    self.nodes.append((node, op, src, slot, key, ck))
                node = child
                path.append(node)
            paths.append(path)
            leaves.append(node)
        self.leaves, self.ends = leaves, set(leaves)
        self.state: dict[int, torch.Tensor] = {}
        needed: set[int] = set()
        for c, path in enumerate(paths):
            start, h = _deepest_cached(store, cache_keys[c] if cache_keys else None, len(path))
            if h is not None:
                self.state[path[start - 1]] = h
            needed.update(path[start:])
        self.children: dict[int, int] = {}  # node -> its needed children not yet run
        self.groups: dict[tuple, list[int]] = {}  # (slot, layer key) -> needed nodes
        for node in sorted(needed):
            parent, _, _, slot, key, _ = self.nodes[node]
            self.children[parent] = self.children.get(parent, 0) + 1
            self.groups.setdefault((slot, key), []).append(node)

    def step(self, stack: Stack, index: int, h: torch.Tensor, args: tuple,
             kwargs: dict) -> torch.Tensor:
        rows = h.shape[0]
        self.state[0] = h
        per_call = (max(1, STACKED_TOKENS // max(1, h.shape[0] * h.shape[1]))
                    if h.device.type == "cpu" else len(self.nodes))
        for (_, _), same in sorted(self.groups.items(), key=lambda kv: kv[0][0]):
            for lo in range(0, len(same), per_call):
                self._run_nodes(stack, same[lo:lo + per_call], rows, args, kwargs)
        leaves = [self.state[n] for n in self.leaves]
        return leaves[0] if len(leaves) == 1 else torch.cat(leaves)

    def _run_nodes(self, stack: Stack, nodes: list[int], rows: int, args: tuple,
                   kwargs: dict) -> None:
        """One call of their (common) layer on the stacked rows of `nodes`' parents."""
        _, op, src, _, _, _ = self.nodes[nodes[0]]
        parents = [self.nodes[n][0] for n in nodes]
        x = torch.cat([self.state[p] for p in parents]) if len(nodes) > 1 \
            else self.state[parents[0]]
        y = stack.apply(op, src, x, args, kwargs, keep=self.keep, copies=len(nodes))
        for j, (node, parent) in enumerate(zip(nodes, parents)):
            part = y[j * rows:(j + 1) * rows]
            if len(nodes) > 1:  # its own storage: the cache counts (and frees) it alone
                part = part.clone()
            self.state[node] = part
            ck = self.nodes[node][5]
            if ck is not None and self.keep:
                self.store.keep_activation(ck, part)
            self.children[parent] -= 1
            if not self.children[parent] and parent not in self.ends:
                del self.state[parent]  # its children have run: nobody reads it again
