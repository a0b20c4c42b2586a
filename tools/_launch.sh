# Shared by dist_train.sh / dist_test.sh: pick the project's Python and run torchrun.
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT (as in OpenMMLab's scripts).
TOOLS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYTHON=${PYTHON:-$TOOLS_DIR/../.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python
torchrun_tool() {  # torchrun_tool NPROC SCRIPT ARGS...
  local nproc=$1 script=$2; shift 2
  exec "$PYTHON" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --master_port="${PORT:-29500}" --nproc_per_node="$nproc" \
    "$TOOLS_DIR/$script" "$@" --launcher pytorch
}
