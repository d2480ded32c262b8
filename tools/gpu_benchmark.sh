#!/usr/bin/env bash
# GPU figures from one prepared command: on one GPU, side by side with the PyTorch
# release, within 8 minutes including compilation.
#
#   bash tools/gpu_benchmark.sh OUT_DIR [--torch_reference DIR] [--dry_run] [--python PY]
#
# Measures with tools/benchmark.py (every configuration in its own process, one at a time):
#   (a) the correlation graph at 64x64, 128x128 and 256x256 nodes: our exact walks (dense,
#       blocked) against the release's GraphRandomWalkNPR, with their largest difference;
#   (b) inference and (c) a training step (Adam 1e-4, the release's BCE) of the paper's network at
#       256 (batch 16, the release's training batch), 512 (batch 4) and 1024 (batch 1), the same
#       pixels per step, in float32 and bfloat16, against the release's FakeLocator;
#   and checks that the 1024x1024 training step fits in 80 GB (the allocator's peak:
#   jax memory_stats()["peak_bytes_in_use"]; torch.cuda.max_memory_allocated() for the release).
# The JAX model configurations are compiled first, in parallel processes, into a persistent
# compilation cache (OUT_DIR/xla_cache) that the measuring processes load; a time budget
# (GPU: 400 s for tools/benchmark.py, itself under a hard limit of 450 s) skips what would
# overrun and says so in the report.
#
# Writes OUT_DIR/benchmark.md (also printed), OUT_DIR/benchmark.json, OUT_DIR/device.txt
# (nvidia-smi -L, the GPU's name/memory/driver, what jax and torch see) and OUT_DIR/run.log.
#
# Needs python with jax (CUDA), flax, optax, ml_collections, numpy and scipy; torch (CUDA) only
# with --torch_reference. Not TensorFlow, tensorflow-datasets or clu: nothing the benchmark runs
# imports them, and benchmark.json records "tensorflow_imported" (must be false).
#
# --torch_reference DIR: a local checkout of GCLion/SDPAL (sdpal.py, resnet.py, ...), imported at
#   run time; without it there are no release rows and no ratios (the report says so).
# --dry_run: the same pipeline on the CPU at tiny sizes (graph 8x8 and 16x16 nodes; a small
#   network at 64x64) to test the command without a GPU; its figures mean nothing.
# --python PY: the interpreter (default: $PYTHON, else python3).
set -euo pipefail

usage() { sed -n '4,5p' "${BASH_SOURCE[0]}" | sed 's/^# *//'; }

out="" reference="" dry_run=0 python="${PYTHON:-python3}"
while [ $# -gt 0 ]; do
  case "$1" in
    --torch_reference) reference="${2:?--torch_reference needs a directory}"; shift 2 ;;
    --torch_reference=*) reference="${1#*=}"; shift ;;
    --dry_run) dry_run=1; shift ;;
    --python) python="${2:?--python needs an interpreter}"; shift 2 ;;
    --python=*) python="${1#*=}"; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "gpu_benchmark.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    *)
      if [ -n "$out" ]; then echo "gpu_benchmark.sh: one OUT_DIR only" >&2; exit 2; fi
      out="$1"; shift ;;
  esac
done
if [ -z "$out" ]; then usage >&2; exit 2; fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
start=$SECONDS

common=(--out "$out" --suite graph,model --methods dense,blocked --memory_limit_gb 80)
if [ -n "$reference" ]; then
  common+=(--torch_reference "$reference")
fi
if [ "$dry_run" = 1 ]; then
  export JAX_PLATFORMS=cpu CUDA_VISIBLE_DEVICES=""
  # Its figures mean nothing: let XLA:CPU compile without its expensive passes (~2x faster).
  export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
  tiny='{"backbone_depth": 18, "feature_channels": 32, "attention_heads": 4, "decoder_channels": [8, 8, 8, 8]}'
  sizes=(--graph_sizes 8,16 --channels 16 --model_sizes 64 --batch 2 --dtypes float32,bfloat16
         --model_overrides "$tiny" --max_release_model_size 64 --repeats 1 --threads 2
         --precompile_jobs 2 --time_budget 400 --timeout 300)
  limit=450
else
  # Leave JAX most of the GPU (its default is 75%), so that 1024 training is not refused early.
  export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.95}"
  sizes=(--graph_sizes 64,128,256 --channels 512 --max_dense_nodes 65536 --max_release_nodes 65536
         --model_sizes 1024,512,256 --batch 256:16,512:4,1024:1 --dtypes float32,bfloat16
         --max_release_model_size 1024 --repeats 5 --precompile_jobs 12 --time_budget 400
         --timeout 300)
  limit=450
fi

{
  echo "# nvidia-smi -L"
  nvidia-smi -L 2>&1 || echo "(nvidia-smi not available)"
  echo "# nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 \
    || echo "(nvidia-smi not available)"
  echo "# python, jax, devices"
  "$python" -c 'import sys, jax; print(sys.version.split()[0], "jax", jax.__version__, jax.devices())' 2>&1 \
    || echo "(jax failed to start)"
  if [ -n "$reference" ]; then
    echo "# torch"
    "$python" -c 'import torch; c = torch.cuda.is_available(); print(torch.__version__, "cuda", c, torch.cuda.get_device_name(0) if c else "")' 2>&1 \
      || echo "(torch failed to start)"
  fi
} > "$out/device.txt"
cat "$out/device.txt"

# The graph suite first (it compiles little), then the model suite from 1024 down, so that the
# 1024 memory check is measured before the smaller sizes should the time budget run out.
status=0
timeout --signal=TERM "$limit" "$python" "$root/tools/benchmark.py" "${common[@]}" "${sizes[@]}" \
  2>&1 | tee "$out/run.log" || status=$?
rm -rf "$out/xla_cache"
echo "gpu_benchmark.sh: $((SECONDS - start)) s in all (benchmark exit status $status)" \
  | tee -a "$out/run.log"
if [ "$status" != 0 ]; then
  exit "$status"
fi
"$python" - "$out/benchmark.json" <<'EOF'
import json
import sys

report = json.load(open(sys.argv[1]))
if report["tensorflow_imported"]:
  sys.exit("gpu_benchmark.sh: a benchmark process imported TensorFlow")
EOF
