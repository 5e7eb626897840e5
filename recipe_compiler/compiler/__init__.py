"""Stage 2, compilation: a recipe checked against its models, then lowered to a plan.

`frontdoor` (read, parse and check in one call), `check` (semantic rules against the
models' headers, every problem at once) and `plan` (lowering: Recipe -> a streaming tensor
Plan of ordered reads, merges and writes). Reads headers only, never weights or torch.
"""
