#!/usr/bin/env bash
# Everything this project checks on a GPU, as one short run (about 5-8 minutes on an H200):
#   1. tests/test_gpu.py on cuda (resume, fast paths, fp16 and bf16, deterministic mode, CUDA graphs, a GPU checkpoint
#      sampled on the CPU);
#   2. the speed benchmark's CUDA set at batches 16 and 256 (make bench ARGS="--device cuda");
#   3. the cost of train.deterministic: the defaults with it, timed in a process of their own (its settings are
#      process-wide), against the defaults of step 2 (deterministic-cost.txt).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]     OUT_DIR: default $OUT (the device tool's), else benchmarks/results
#
# It needs only a Python with torch (CUDA), torchvision, safetensors, pyyaml, matplotlib, scikit-learn and
# pytest: the repository's .venv if there is one, else python3 (PYTHON=... to choose). Logs, the GPU's description
# and the benchmark's JSON land in OUT_DIR. Exit status: non-zero if the tests or the benchmark failed.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-benchmarks/results}}
mkdir -p "$out"
if [ -n "${PYTHON:-}" ]; then py=$PYTHON; elif [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg

{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
  "$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu",
            torch.cuda.get_device_name() if torch.cuda.is_available() else "none visible")'
} | tee "$out/gpu-info.txt"
if ! "$py" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
    echo "gpu_check: torch sees no CUDA GPU here: nothing to check (run it on a GPU node)" >&2
    exit 2
fi

start=$(date +%s)
"$py" -m pytest -q -p no:cacheprovider -rs tests/test_gpu.py 2>&1 | tee "$out/gpu-tests.log"
tests=${PIPESTATUS[0]}
echo "gpu_check: tests took $(( $(date +%s) - start )) s"

start=$(date +%s)
"$py" benchmarks/bench.py --device cuda --batches 16 256 --repeats 5 --out "$out" 2>&1 | tee "$out/bench-cuda.log"
bench=${PIPESTATUS[0]}
echo "gpu_check: benchmark took $(( $(date +%s) - start )) s"

start=$(date +%s)
"$py" benchmarks/bench.py --device cuda --batches 16 256 --repeats 5 --variants defaults+deterministic \
    --skip sampling checkpoint --out "$out/deterministic" 2>&1 | tee "$out/bench-deterministic.log"
det=${PIPESTATUS[0]}
"$py" - "$out" <<'PY' | tee "$out/deterministic-cost.txt"
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
def rows(folder):
    files = sorted(folder.glob("*.json"))
    return json.loads(files[-1].read_text())["training"] if files else []
base = {r["batch"]: r["img_per_s"] for r in rows(out) if r.get("name") == "defaults"}
for r in rows(out / "deterministic"):
    if r.get("name") == "defaults+deterministic" and r["batch"] in base:
        cost = 1 - r["img_per_s"] / base[r["batch"]]
        print(f"train.deterministic at batch {r['batch']}: {r['img_per_s']:.0f} img/s vs {base[r['batch']]:.0f} "
              f"with the defaults ({cost:+.1%} slower)")
PY
echo "gpu_check: deterministic benchmark took $(( $(date +%s) - start )) s"

echo "gpu_check: tests exit $tests, benchmark exit $bench, deterministic benchmark exit $det"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ] && [ "$det" -eq 0 ]
