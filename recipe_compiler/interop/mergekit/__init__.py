"""Convert between mergekit YAML configs and tailor recipes, exactly or not at all.

Consumes: mergekit config text (`import_config`), or a `Recipe` and optionally its models'
`ModelInfo` (`export_recipe`).
Produces: a `Recipe` that builds the same tensors as `mergekit-yaml` would, or mergekit YAML
that builds the same tensors as `tailorc build` would. Anything one side cannot say exactly
is a `RecipeError` pointing at the YAML key (line and column from PyYAML's node marks) or at
the recipe token, never an approximation.

Three facts of mergekit (0.1.x, `mergekit/plan.py`, `config.py`, `merge_methods/`) shape the
mapping:
- `layer_range: [a, b]` is half-open; a slice of n layers makes n output layers, output
  layer k of the slice reading layer `a_j + k` of each source j.
- the embeddings are merged over the FIRST slice's sources and the final norm and lm_head
  over the LAST slice's, with the config's one merge method and parameters read at t = 0:
  the recipe's `embed =`, `norm =` and `head =`; a whole-model config (`models:`) is one
  slice over every layer (`slot 0.. =`), its base model added when not listed.
- parameters resolve per tensor through source -> slice -> top-level `parameters`; a list
  of numbers is a gradient over the slice (`gradient(...)`), and `filter` entries match
  substrings of tensor names: a tensor group's name (`by_group(...)`, the groups named in
  models/arch/*.json); mergekit's scalar `scale` multiplies every tensor of a layer, while
  tailor's multiplies only the output projections.

A config is untrusted text: it is read within limits (size, nesting, nodes reached through
aliases, layer indices) checked before anything iterates over it, every number is checked
finite and in range before use, and every problem, a limit passed included, is a positioned
diagnostic (found by tests/test_fuzz_mergekit.py).

The package: `yaml_nodes` reads the text into positioned nodes within those limits;
`config`, `parameters`, `importer` and `placing` turn them into a `Recipe`; `exporter` writes a
`Recipe` as YAML; `common` holds what both directions know of mergekit.
"""

from recipe_compiler.interop.mergekit.common import (
    BOOL_PARAMETERS,
    GROUPS,
    KEYWORDS,
    METHODS,
    PARAMETERS,
    REFUSED_KEYS,
    SCALE_FILTER_SETS,
    TOP_KEYS,
)
from recipe_compiler.interop.mergekit.exporter import export_recipe
from recipe_compiler.interop.mergekit.importer import import_config
from recipe_compiler.interop.mergekit.yaml_nodes import (
    MAX_ALIASED_NODES,
    MAX_CHARS,
    MAX_DEPTH,
    MAX_ERRORS,
    MAX_NODES,
    MERGE_TAG,
)

__all__ = [
    "BOOL_PARAMETERS",
    "GROUPS",
    "KEYWORDS",
    "MAX_ALIASED_NODES",
    "MAX_CHARS",
    "MAX_DEPTH",
    "MAX_ERRORS",
    "MAX_NODES",
    "MERGE_TAG",
    "METHODS",
    "PARAMETERS",
    "REFUSED_KEYS",
    "SCALE_FILTER_SETS",
    "TOP_KEYS",
    "export_recipe",
    "import_config",
]
