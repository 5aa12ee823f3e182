#!/usr/bin/env bash
# One prepared GPU run (about ten minutes on one CUDA GPU): the large-unit benchmark on CUDA in
# float32, then the matching CPU-free checks. Results go to $OUT (the device tool's folder) or
# ./gpu-results. Usage from the repository root: bash benchmarks/gpu.sh
set -euo pipefail
OUT="${OUT:-gpu-results}"
mkdir -p "$OUT"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
export PYTHONPATH="$(pwd)/src${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
timeout 540 python benchmarks/large_units.py --device cuda --dtype float32 \
    --out "$OUT/large_units_cuda.json" 2>&1 | tee "$OUT/large_units_cuda.log"
