#!/usr/bin/env bash
# The checks that need a CUDA GPU, as one script for a short loan of one (none are part of CI).
#
#   bash benchmarks/gpu_check.sh checks            # the CUDA training path, then stage throughput:
#                                                  # 112 px (paper preset) bf16 and fp32, 48 px (demo)
#
# Uses the source tree (no install needed); outputs land in $OUT (default /tmp/gpu-check).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/src:$PWD/benchmarks PYTHONUNBUFFERED=1 DICEFER_CACHE=${DICEFER_CACHE:-/tmp/dicefer-cache}
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import sys, torch, torchvision; print('python', sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__)"

case "${1:-checks}" in
checks)
    # 1. The whole CUDA path (loader workers, bf16 autocast, channels_last, all three stages, report).
    SECONDS=0
    timeout 150 python3 -m dicefer train --quiet --preset smoke --out /tmp/gpu-smoke --set device=cuda \
        && cp /tmp/gpu-smoke/report/report.json "$OUT/smoke-report.json" && echo "smoke on cuda: ${SECONDS}s"
    # 2. Throughput of each stage; the paper's 112x112 data with fewer identities, so it renders fast.
    for precision in bf16 fp32; do
        timeout 140 python3 benchmarks/stage_throughput.py --preset paper --device cuda --epochs 3 \
            --set precision=$precision --set data.train_identities=60 --set data.test_identities=10
    done
    timeout 100 python3 benchmarks/stage_throughput.py --preset demo --device cuda --epochs 3
    ;;
*) echo "usage: $0 checks" >&2; exit 2 ;;
esac
