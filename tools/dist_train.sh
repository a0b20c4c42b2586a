#!/usr/bin/env bash
# Usage: tools/dist_train.sh CONFIG NPROC [args...]   (cls YAML or det/seg config; gloo on CPU, NCCL on GPU)
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 CONFIG NPROC [args...]" >&2; exit 2; }
source "$(dirname "$0")/_launch.sh"
CONFIG=$1; NPROC=$2; shift 2
torchrun_tool "$NPROC" train.py "$CONFIG" "$@"
