#!/usr/bin/env bash
# GPU training benchmark (see gpu_train_bench.py); extra args pass through, e.g. --steps 10.
exec "${PYTHON:-python}" "$(dirname "$0")/gpu_train_bench.py" "$@"
