#!/usr/bin/env bash
# The CUDA checks, prepared for whenever a GPU is at hand (a few minutes on one GPU).
# Needs: a CUDA torch and this package installed; a real family built once with
# `tailorc zoo --real FAMILY` (default ./real-family). Prints each table; exits non-zero on
# the first failure.
#   bash bench/gpu.sh [FAMILY]
set -euo pipefail
cd "$(dirname "$0")/.."
family="${1:-real-family}"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
python bench/gpu_check.py
echo "== build: a merge of the real family on the GPU equals the CPU build, byte for byte"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat > "$work/merge.tr" <<TR
model base = "$(realpath "$family/base")"
model facts = "$(realpath "$family/facts")"
model arith = "$(realpath "$family/arith")"
slot 0..30 = merge(facts, arith, weights=[0.5, 0.5], method=task_arithmetic)
TR
/usr/bin/time -f "cuda build: %e s, %M KB peak RSS" tailorc build "$work/merge.tr" -o "$work/gpu" --device cuda
/usr/bin/time -f "cpu build: %e s, %M KB peak RSS" tailorc build "$work/merge.tr" -o "$work/cpu" --device cpu
cmp "$work/gpu/model.safetensors" "$work/cpu/model.safetensors" && echo "identical bytes"
echo "== eval on the GPU (bfloat16) and the CPU (float32)"
/usr/bin/time -f "cuda eval: %e s" tailorc eval "$family/base" "$work/gpu" --tasks "$family/tasks" --device cuda --dtype bfloat16
echo "== search: memory, time per candidate, fitness == eval of the built winner"
python bench/real.py --family "$family" --device cuda --dtype bfloat16 --max-memory 4GB --fine-tunes 1 2 4
