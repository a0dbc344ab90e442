#!/usr/bin/env bash
# What we measure on a lent GPU, in one call per part (a call may run 10 minutes at most):
#   bash benchmarks/gpu_session.sh speed   (about 5 minutes on one H200)
#     1. the fast SK path against the fp64 reference on the GPU (forward and gradients),
#     2. benchmarks/speed.py --device cuda (AMP bf16, batch 256: ours vs timm, SK vs ResNeXt;
#        eager tasks first, then compiled eval; JSON written after every task);
#   bash benchmarks/gpu_session.sh train   (about 6 minutes)
#     3. `sknet train` on synthetic 224x224 data, AMP bf16, channels_last, 3 epochs of 70 steps of
#        batch 256: sknet50 eagerly and with --compile, and resnext50_32x4d eagerly.
# Results go to $OUT (default gpu_results/). Each step has its own time limit, so one failure
# does not cost the others.
set -u
OUT=${OUT:-gpu_results}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  $PY -c "import torch, torchvision; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'torchvision', torchvision.__version__)"
  $PY -c "import timm; print('timm', timm.__version__)"
  nproc
  git rev-parse --short HEAD 2>/dev/null || true
} > "$OUT/env.txt" 2>&1

PART=${1:-speed}
if [ "$PART" = speed ]; then
  SKNET_TEST_DEVICE=cuda timeout 60 $PY -m pytest tests/test_fast_sk.py -q -p no:cacheprovider \
    > "$OUT/pytest_cuda.txt" 2>&1
  echo "pytest rc=$?" >> "$OUT/pytest_cuda.txt"
  timeout 360 $PY benchmarks/speed.py --device cuda --json "$OUT/gpu.json" > "$OUT/speed.txt" 2>&1
  echo "speed rc=$?" >> "$OUT/speed.txt"
fi

train() {  # name, time limit (s), extra args
  local name=$1 limit=$2; shift 2
  timeout "$limit" $PY -m sknet train --data synthetic:17920 --epochs 3 --batch-size 256 \
    --eval-sizes 224 --amp --channels-last --device cuda --save-every 0 \
    --out "/tmp/train_$name" "$@" > "$OUT/train_$name.txt" 2>&1
  echo "train rc=$?" >> "$OUT/train_$name.txt"
  cat "/tmp/train_$name/metrics.csv" >> "$OUT/train_$name.txt" 2>/dev/null
}
if [ "$PART" = train ]; then
  train sknet50 100 --model sknet50
  train resnext50 100 --model resnext50_32x4d
  train sknet50_compile 200 --model sknet50 --compile
fi
ls -la "$OUT"
