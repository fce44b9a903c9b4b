#!/usr/bin/env bash
# The GPU rows of bench/README.md in one prepared run (about 8 minutes on one GPU): step costs of CE, exact GC
# (batched and per chunk), the fused disposal step and finite-difference GC for ResNet-18 at batch 128 and 512,
# c = 2, 8, 16, with peak memory; the loader's images/s per worker; one gc_cifar100_cifar10-shaped disposal
# stage's images/s on CIFAR-sized data. Each table goes to $OUT (default bench/gpu-rows/) and to stdout.
#   bash bench/gpu_rows.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/gpu-rows}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"
for batch in 128 512; do
  python bench/gc_step.py --device cuda --batch "$batch" --chunks 2 8 16 --reps 3 \
    --kinds gc gc-per-chunk dtl dtl-unfused gc-fd dtl-fd | tee "$OUT/gc_step_b$batch.md"
done
python bench/loader_throughput.py --workers 1 4 8 | tee "$OUT/loader.md"
python bench/dispose_throughput.py | tee "$OUT/dispose_throughput.md"
