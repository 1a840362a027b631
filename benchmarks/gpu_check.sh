#!/usr/bin/env bash
# The checks that need a CUDA GPU, as one script for a short loan of one (none are part of CI).
#
#   bash benchmarks/gpu_check.sh checks            # the CUDA training path, then stage throughput:
#                                                  # 112 px (paper preset) bf16 and fp32, 48 px (demo)
#   bash benchmarks/gpu_check.sh fer2013 EPOCHS [FER2013 DIR or .tar.gz]
#                                                  # DICE-FER against the baseline on FER2013 at 48 px
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
fer2013)
    epochs=${2:?number of Stage 1 epochs}
    data=${3:-../shared/data/fer2013}
    if [[ $data == *.tar.gz ]]; then tar -xzf "$data" -C /tmp && data=/tmp/fer2013; fi
    # DICE-FER with the Stage 1 cross-entropy term against the baseline at 48 px.
    timeout 560 python3 benchmarks/fer2013_benchmark.py --data "$data" --variants supervised,ce \
        --stage1-epochs "$epochs" --stage2-epochs 1 --out /tmp/gpu-fer2013 --label fer2013-48px-gpu \
        --set device=cuda --set threads=4 --set lr_schedule=cosine \
        --set mi.mu=0.05 --set mi.nu=0.1 --set model.classifier_dropout=0.5
    cp docs/benchmarks.md "$OUT/benchmarks.md"
    for run in /tmp/gpu-fer2013/*; do
        cp "$run/report/report.json" "$OUT/$(basename "$run")-report.json"
        cp "$run/metrics.jsonl" "$OUT/$(basename "$run")-metrics.jsonl"
    done
    ;;
*) echo "usage: $0 checks | fer2013 EPOCHS [DIR]" >&2; exit 2 ;;
esac
