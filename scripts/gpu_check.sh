#!/usr/bin/env bash
# The recorder's GPU checks in one go, from the repo root of a CUDA machine where trainmedic is not installed
# (PYTHONPATH=src): the CUDA tests + the probe tests, the overhead benchmark on the GPU, then on that machine's
# CPU. Everything is also written to ${OUT:-/tmp}/gpu_check.log. Exit status: the tests' when they failed,
# else 1 when a benchmark failed, else 0. Worst case ≈ 9 min (timeouts 240 + 150 + 90 + 60 s).
#   bash scripts/gpu_check.sh
set -u
cd "$(dirname "$0")/.." || exit 1
export PYTHONPATH=src PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
LOG="${OUT:-/tmp}/gpu_check.log"
mkdir -p "$(dirname "$LOG")" && : >"$LOG"

say() { echo "$*" | tee -a "$LOG"; }
# run CMD...: its output to the terminal and the log; returns CMD's own exit status (not tee's)
run() {
  say "== $*"
  "$@" 2>&1 | tee -a "$LOG"
  return "${PIPESTATUS[0]}"
}

say "== gpu_check $(date -u '+%Y-%m-%d %H:%M UTC') on $(hostname), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
run nvidia-smi -L || say "nvidia-smi -L failed (no NVIDIA driver?)"
say "== versions"
"$PY" -c 'import sys, torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "| cuda available:", torch.cuda.is_available(),
      "|", torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")' 2>&1 | tee -a "$LOG"

# pyproject's addopts is "-ra" (no plugin needed); -x stops at the first failure
run timeout 240 "$PY" -m pytest -q -p no:cacheprovider -x --durations=10 \
  tests/recorder/test_recorder_cuda.py tests/recorder/test_recorder_probes.py \
  tests/recorder/test_recorder_log_steps.py tests/recorder/test_recorder_overhead_budget.py
tests_rc=$?
say "== tests: exit status $tests_rc$([ "$tests_rc" -eq 124 ] && echo ' (timed out after 240 s)')"

bench_rc=0
if "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  run timeout 150 "$PY" benchmarks/overhead.py --device cuda --rounds 25 --models mlp,cnn,big || bench_rc=$?
  run timeout 90 "$PY" benchmarks/overhead.py --device cuda --rounds 10 --parts --models mlp,big || bench_rc=$?
else
  say "== skipping the CUDA benchmark: torch.cuda.is_available() is False on this machine"
fi
run timeout 60 "$PY" benchmarks/overhead.py --rounds 20 --only mlp || bench_rc=$?

say "== done: tests exit status $tests_rc, benchmarks exit status $bench_rc; log in $LOG"
if [ "$tests_rc" -ne 0 ]; then
  exit "$tests_rc"
fi
[ "$bench_rc" -eq 0 ] || exit 1
exit 0
