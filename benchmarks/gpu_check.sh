#!/usr/bin/env bash
# One prepared GPU run: install kprep on a bare CUDA machine, run the `gpu` tests,
# the E4B-shaped training benchmark (every variant) and the input-pipeline
# benchmark, and leave a JSON summary + the full log in OUTDIR.
#
#   benchmarks/gpu_check.sh [--dry-run] [OUTDIR]        # OUTDIR default: gpu-check-out/
#
# Needs: Python >= 3.10 with pip, an NVIDIA driver. Wheels may be carried in a
# `.whl/` folder at the repository root (then pip installs with --no-index from
# it); otherwise pip installs from PyPI. Every step has a time limit (seconds,
# total under 8 minutes on one H200); a step that fails or runs out of time is
# recorded and the next one still runs. OUTDIR gets:
#   gpu_check.log     everything every step printed
#   summary.json      date, GPU, versions, each step's exit code and time,
#                     gpu test counts, benchmark results (bench.json, data.json)
#   gpu-tests.xml     pytest's JUnit report
# --dry-run: no install, the current interpreter ($PYTHON or python), the gpu
# tests without KPREP_REQUIRE_GPU (they skip on a CPU) and the benchmark's
# --tiny CPU mode: proves the script's wiring (tests/test_gpu_check.py runs it).
set -uo pipefail

DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-gpu-check-out}"
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"
LOG="$OUT/gpu_check.log"
STEPS="$OUT/steps.jsonl"
: >"$LOG"
: >"$STEPS"
rm -f "$OUT/bench.json" "$OUT/data.json" "$OUT/gpu-tests.xml" "$OUT/summary.json"
# Time limits per step (seconds); override with the environment for a slower machine.
LIMIT_INSTALL="${LIMIT_INSTALL:-160}"
LIMIT_TESTS="${LIMIT_TESTS:-100}"
LIMIT_BENCH="${LIMIT_BENCH:-160}"
LIMIT_DATA="${LIMIT_DATA:-45}"
BENCH_STEPS="${BENCH_STEPS:-6}"
STARTED=$(date +%s)

log() { echo "[gpu_check $(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }

# step NAME LIMIT CMD...: run CMD under `timeout`, output to the log and stdout.
step() {
    local name=$1 limit=$2 start rc secs
    shift 2
    log "step $name (limit ${limit}s): $*"
    start=$(date +%s)
    timeout --kill-after=15 "$limit" "$@" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    secs=$(($(date +%s) - start))
    log "step $name: exit $rc after ${secs}s$([ "$rc" = 124 ] && echo ' (time limit)')"
    printf '{"step": "%s", "rc": %d, "seconds": %d, "limit_s": %d}\n' \
        "$name" "$rc" "$secs" "$limit" >>"$STEPS"
    return "$rc"
}

cd "$ROOT" || exit 2
if [ "$DRY" = 1 ]; then
    PY="${PYTHON:-python}"
    log "dry run: $PY, no install"
else
    VENV="${KPREP_GPU_VENV:-$ROOT/.gpu-venv}"
    if python3 -m venv "$VENV" >>"$LOG" 2>&1; then
        PY="$VENV/bin/python"
        PIP_EXTRA=()
    else
        log "python3 -m venv failed (no venv module?): installing into the system python3"
        PY="python3"
        PIP_EXTRA=(--break-system-packages)
        "$PY" -m pip install --help 2>/dev/null | grep -q -- --break-system-packages || PIP_EXTRA=()
    fi
    if [ -d "$ROOT/.whl" ]; then
        step install "$LIMIT_INSTALL" "$PY" -m pip install -q "${PIP_EXTRA[@]}" \
            --no-index --find-links "$ROOT/.whl" -e "$ROOT[train,dev]"
    else
        step install "$LIMIT_INSTALL" "$PY" -m pip install -q "${PIP_EXTRA[@]}" -e "$ROOT[train,dev]"
    fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
PATH="$(dirname "$(command -v "$PY")"):$PATH"
export PATH

ENV_JSON="$OUT/environment.json" step environment 60 "$PY" - <<'EOF'
import json, os, platform, subprocess
from importlib.metadata import PackageNotFoundError, version
info = {"python": platform.python_version()}
for name in ("kprep", "torch", "transformers", "peft", "accelerate", "deepspeed", "bitsandbytes"):
    try:
        info[name] = version(name)
    except PackageNotFoundError:
        info[name] = None
import torch
info["cuda_available"] = torch.cuda.is_available()
info["cuda"] = torch.version.cuda
info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
try:
    info["driver"] = subprocess.run(
        ["nvidia-smi", "--query-gpu=driver_version,memory.total", "--format=csv,noheader"],
        capture_output=True, text=True, timeout=20).stdout.strip() or None
except (OSError, subprocess.SubprocessError):
    info["driver"] = None
print(json.dumps(info))
with open(os.environ["ENV_JSON"], "w") as fh:
    json.dump(info, fh)
EOF

if [ "$DRY" = 1 ]; then
    step gpu_tests "$LIMIT_TESTS" "$PY" -m pytest -q -m gpu -p no:cacheprovider \
        --junitxml "$OUT/gpu-tests.xml" tests/test_gpu.py
    # shellcheck disable=SC2086
    step bench "$LIMIT_BENCH" "$PY" benchmarks/gpu_train_bench.py --tiny --steps 3 --grad-accum 2 \
        ${KPREP_DRY_VARIANTS:+--variants "$KPREP_DRY_VARIANTS"} --json "$OUT/bench.json"
    step data_bench "$LIMIT_DATA" "$PY" benchmarks/gpu_train_bench.py --data-only --samples 2 \
        --workers 2 --json "$OUT/data.json"
else
    KPREP_REQUIRE_GPU=1 step gpu_tests "$LIMIT_TESTS" "$PY" -m pytest -q -m gpu -p no:cacheprovider \
        --junitxml "$OUT/gpu-tests.xml" tests
    step bench "$LIMIT_BENCH" "$PY" benchmarks/gpu_train_bench.py --steps "$BENCH_STEPS" \
        --json "$OUT/bench.json"
    step data_bench "$LIMIT_DATA" "$PY" benchmarks/gpu_train_bench.py --data-only --samples 48 \
        --workers 2 --json "$OUT/data.json"
fi

TOTAL=$(($(date +%s) - STARTED))
OUT="$OUT" DRY="$DRY" TOTAL="$TOTAL" "$PY" - <<'EOF' 2>&1 | tee -a "$LOG"
import datetime, json, os, subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

out = Path(os.environ["OUT"])

def read(name):
    path = out / name
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None

steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines() if line]
tests = None
if (out / "gpu-tests.xml").is_file():
    root = ET.parse(out / "gpu-tests.xml").getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    tests = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    tests["failed"] = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
except OSError:
    commit = None
summary = {
    "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "dry_run": os.environ["DRY"] == "1",
    "commit": commit or None,
    "total_s": int(os.environ["TOTAL"]),
    "environment": read("environment.json"),
    "steps": steps,
    "ok": all(s["rc"] == 0 for s in steps),
    "gpu_tests": tests,
    "bench": read("bench.json"),
    "data_bench": read("data.json"),
}
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(f"summary: {out / 'summary.json'} (ok={summary['ok']}, {summary['total_s']} s)")
EOF
log "done in $(($(date +%s) - STARTED)) s; log $LOG"
# Exit 0 only when every step passed.
[ "$(grep -c '"rc": 0' "$STEPS")" = "$(wc -l <"$STEPS")" ]
