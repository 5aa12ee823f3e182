#!/usr/bin/env bash
# One prepared GPU run of the main job (issue 16): the full report on ResNet-56 with
# --device cuda, cold and cached, profiled (benchmarks/report_profile.py). Needs ../shared/weights
# (or LINSTAB_WEIGHTS_DIR). Results go to $OUT (the device tool's folder) or ./gpu-results.
# Usage from the repository root: bash benchmarks/gpu_report.sh [extra linstab report args]
set -euo pipefail
OUT="${OUT:-gpu-results}"
mkdir -p "$OUT"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
export PYTHONPATH="$(pwd)/src${PYTHONPATH:+:$PYTHONPATH}"
export LINSTAB_WEIGHTS_DIR="${LINSTAB_WEIGHTS_DIR:-$(cd .. && pwd)/shared/weights}"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
timeout 560 python benchmarks/report_profile.py --label cuda --workdir "$OUT/work" \
    --out "$OUT/report_profile_cuda.json" -- --model resnet56-akamaster --device cuda "$@" \
    2>&1 | tee "$OUT/report_profile_cuda.log"
