#!/usr/bin/env bash
# NCF training throughput on this machine's GPUs, for comparison with NVIDIA's NCF reference
# (DeepLearningExamples PyTorch/Recommendation/NCF: 22.6M samples/s on one A100 80GB, TF32,
# batch 1M). Runs on generated implicit data (positives + 4 sampled negatives per positive):
#
#   1. train.backend=local on one GPU (the driver process);
#   2. train.backend=torch with one process per GPU over NCCL, on a local standalone cluster
#      (scripts/local_cluster.sh, one worker offering every GPU; needs `make package-env`).
#
# Prints one line per run: backend, processes, samples/s (all ranks together, best epoch), and the
# ratio to the reference. Needs a CUDA build of torch (`make setup` on a machine without this
# project's CPU wheel cache installs torch==2.13.0 from PyPI, which is the CUDA build).
#
#   scripts/gpu_check.sh                 # 20M positives, 1M samples per step (negatives included)
#   GPU_CHECK_ROWS=2000000 GPU_CHECK_BATCH=262144 scripts/gpu_check.sh
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_ROWS=3000 scripts/gpu_check.sh   # dry run of the script on CPU
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY="${SPARKREC_VENV:-$ROOT/.venv}/bin/python"
DEVICE=${GPU_CHECK_DEVICE:-cuda}
ROWS=${GPU_CHECK_ROWS:-20000000}
BATCH=${GPU_CHECK_BATCH:-1048576}
EPOCHS=${GPU_CHECK_EPOCHS:-3}
WORK=${GPU_CHECK_DIR:-/tmp/sparkrec-gpu-check}
REFERENCE=22600000  # samples/s, NVIDIA NCF on 1x A100 80GB, TF32, batch 1M

if [ "$DEVICE" = cuda ]; then
  GPUS=$("$PY" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)')
  [ "$GPUS" -gt 0 ] || { echo "gpu_check: torch sees no CUDA device (torch $("$PY" -c 'import torch; print(torch.__version__)')); run it on a GPU machine with a CUDA build of torch" >&2; exit 2; }
  "$PY" -c 'import torch; [print(f"gpu_check: GPU {i}: {torch.cuda.get_device_name(i)}, bf16={torch.cuda.is_bf16_supported()}") for i in range(torch.cuda.device_count())]'
else
  GPUS=0
fi
WORKERS=$((GPUS > 1 ? GPUS : 2))
mkdir -p "$WORK"
lake="$WORK/lake"
common=("lake=$lake" "name=gpu-check" "input.path=$WORK/raw" "input.columns.rating=null" "lake_shared=true"
        "train.num_workers=$WORKERS" "prepare.split.kind=leave_last_out" "prepare.split.validation=false")
users=$((ROWS / 100 > 1000 ? ROWS / 100 : 1000)); items=$((ROWS / 500 > 500 ? ROWS / 500 : 500))

if [ ! -f "$lake/prepared/manifest.json" ] || [ "$(cat "$WORK/rows" 2>/dev/null)" != "$ROWS" ]; then
  rm -rf "$lake" "$WORK/raw"
  "$ROOT/spark-submit.sh" jobs/generate_data.py "${common[@]}" generate.kind=implicit "generate.num_rows=$ROWS" \
    "generate.num_users=$users" "generate.num_items=$items" generate.dirt_rate=0.0 >/dev/null
  "$ROOT/spark-submit.sh" jobs/prepare_data.py "${common[@]}" >/dev/null
  echo "$ROWS" > "$WORK/rows"
fi

# GPU_CHECK_BATCH counts samples per step over all processes, negatives included, as NVIDIA's
# batch does; train.batch_size counts positives per process.
positives() { echo $(( BATCH / 5 / $1 > 1 ? BATCH / 5 / $1 : 1 )); }
train=("${common[@]}" train.model=neumf "train.device=$DEVICE" train.amp=auto "train.epochs=$EPOCHS"
       train.num_negatives=4 train.lr=0.0045 train.shuffle_buffer=0 train.log_every_steps=1000000)

# Reads the train job's output on stdin; prints the samples/s line of its best epoch.
read -r -d '' REPORT <<'EOF' || true
import json, sys
backend, processes, lake, reference = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
text = sys.stdin.read()
start = text.rfind("\n{\n") + 1  # the job prints its summary last, as indented JSON
json.loads(text[start:text.rindex("}") + 1])  # it finished and published
from sparkrec.models.store import load_model
_, meta = load_model(lake, "gpu-check")
# samples/s of all ranks together, positives plus their 4 sampled negatives, as NVIDIA counts them
rate = max(h["samples_per_s"] for h in meta["history"]) * 5
print(f"gpu_check: backend={backend} processes={processes} samples/s={rate:,.0f} "
      f"({rate / reference:.2f}x NVIDIA's 22.6M samples/s on one A100)")
EOF
report() { "$PY" -c "$REPORT" "$1" "$2" "$lake" "$REFERENCE"; }

out=$("$ROOT/spark-submit.sh" jobs/train_ncf.py "${train[@]}" train.backend=local train.num_workers=1 \
      "train.batch_size=$(positives 1)")
echo "$out" | report local 1

if [ "$DEVICE" = cuda ]; then
  export SPARKREC_CLUSTER_DIR="$WORK/cluster" SPARKREC_CLUSTER_WORKERS=1 SPARKREC_CLUSTER_GPUS=$GPUS
  make -C "$ROOT" package-env >/dev/null
  trap '"$ROOT/scripts/local_cluster.sh" stop' EXIT
  master=$("$ROOT/scripts/local_cluster.sh" start)
  # Standalone workers hand each executor GPU addresses they discovered (scripts/gpu_discovery.sh).
  out=$("$ROOT/spark-submit.sh" --master "$master" --conf spark.executor.cores="$GPUS" \
        --conf spark.executor.resource.gpu.amount="$GPUS" --conf spark.task.resource.gpu.amount=1 \
        jobs/train_ncf.py "${train[@]}" train.backend=torch "train.num_workers=$GPUS" \
        "train.batch_size=$(positives "$GPUS")")
  echo "$out" | report torch "$GPUS"
fi
