"""Stage 1, the recipe language: text <-> IR.

`source` (spans, diagnostics and the one renderer), `recipe` (the frozen IR), `parser`
(Lark grammar -> IR, every argument problem collected) and `printer` (IR -> canonical text).
Nothing here reads a model or imports torch.
"""
