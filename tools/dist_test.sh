#!/usr/bin/env bash
# Usage: tools/dist_test.sh CONFIG CHECKPOINT NPROC [args...]
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 CONFIG CHECKPOINT NPROC [args...]" >&2; exit 2; }
source "$(dirname "$0")/_launch.sh"
CONFIG=$1; CHECKPOINT=$2; NPROC=$3; shift 3
torchrun_tool "$NPROC" test.py "$CONFIG" "$CHECKPOINT" "$@"
