#!/usr/bin/env bash
# One call on a GPU machine (the device tool runs it in the repository root):
#   bash tests/device/run_gpu.sh quick   build, GPU tests, quick bench (no torch.compile)
#   bash tests/device/run_gpu.sh full    build, full bench (docs/performance_gpu.md), whole suite
# Logs, the bench's markdown/json and the pytest summary go to $OUT (or /tmp/out).
set -u
export PYTHONUNBUFFERED=1 OPENBLAS_NUM_THREADS=1
MODE=${1:-quick}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
ROOT=$PWD
# CuPy's kernel cache from an earlier call (carried as .devcache), so kernels are not recompiled
if [ -f .devcache/cupy_cache.tgz ]; then mkdir -p ~/.cupy && tar -xzf .devcache/cupy_cache.tgz -C ~/.cupy; fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv
python3 -c "import sys, torch, cupy, numpy; print(sys.version.split()[0], 'torch', torch.__version__, 'cupy', cupy.__version__, 'numpy', numpy.__version__)"
t0=$(date +%s)
if ! python3 -m pip install -q --no-build-isolation --no-deps . -Cbuild-dir=/tmp/swbuild \
     >"$OUT/build.log" 2>&1; then
  echo "pip install failed (tail of $OUT/build.log below); using the checkout on PYTHONPATH"
  tail -20 "$OUT/build.log"
  export PYTHONPATH=$ROOT
fi
echo "build $(( $(date +%s) - t0 )) s"
cd /tmp
python3 -c "import swanref, swanref.backends.cupy as C; print('swanref', swanref.__version__, swanref.__file__, 'cupy backend', C.available(), C.compile_path())"
if [ "$MODE" = quick ]; then
  t0=$(date +%s)
  python3 -m pytest -q -p no:cacheprovider -x -n 8 "$ROOT/tests/test_gpu_backend.py" \
      "$ROOT/tests/test_gpu_presets.py" "$ROOT/tests/test_dlpack.py" 2>&1 | tail -25
  echo "gpu tests $(( $(date +%s) - t0 )) s"
  python3 -m swanref.tools.bench_gpu --quick --no-compile --sections ns,presets,gradnorm \
      --json "$OUT/bench_quick.json" --markdown "$OUT/bench_quick.md" 2>&1 \
      | tee "$OUT/bench_quick.log" | tail -40
  python3 "$ROOT/tests/device/gram_probe.py" 2>&1 | tail -20
  tar -czf "$OUT/cupy_cache.tgz" -C ~/.cupy kernel_cache && ls -la "$OUT/cupy_cache.tgz"
else
  t0=$(date +%s)
  timeout -s INT "${BENCH_SECONDS:-330}" python3 -m swanref.tools.bench_gpu \
      --json "$OUT/bench.json" --markdown "$OUT/bench.md" > "$OUT/bench.log" 2>&1
  grep -v '^{' "$OUT/bench.log" | tail -70
  echo "bench $(( $(date +%s) - t0 )) s"
  t0=$(date +%s)
  timeout -s INT "${SUITE_SECONDS:-200}" python3 -m pytest -q -p no:cacheprovider -rfE -n 8 \
      "$ROOT/tests" > "$OUT/pytest.log" 2>&1
  grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/pytest.log" | tail -25
  echo "suite $(( $(date +%s) - t0 )) s"
  python3 -m pytest -q --collect-only -p no:cacheprovider "$ROOT/tests/test_gpu_backend.py" \
      "$ROOT/tests/test_gpu_presets.py" "$ROOT/tests/test_dlpack.py" 2>&1 | tail -1
fi
