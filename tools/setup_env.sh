#!/usr/bin/env bash
# Create/refresh .venv with the pinned stack and our compiled ops. Idempotent: a finished step is
# recorded in .venv/.localattn-stamps/ and skipped next time; mmcv's built wheel is cached under
# $LOCALATTN_CACHE_DIR/wheels (default ~/.cache/localattn, the folder of localattn's other caches) so only
# the first run on a machine compiles it.
#
# GPU box: export FORCE_CUDA=1 (and TORCH_CUDA_ARCH_LIST) before the first run so mmcv's CUDA ops
# are compiled too; the cached wheel name then carries "+cuda" so CPU and GPU wheels never mix.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
VENV=$ROOT/.venv
CACHE=${LOCALATTN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/localattn}
WHEELS=$CACHE/wheels
STAMPS=$VENV/.localattn-stamps
MMCV_VERSION=2.1.0
log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

[ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PY" -m venv "$VENV"; }
mkdir -p "$STAMPS" "$WHEELS"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
# pip's "Location ... is ignored" lines about this machine's unused local indexes are noise: drop them.
pip_run() { "${PIP[@]}" "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
stamp_ok() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
# Third-party packages go in through uv: pip unpacks one wheel at a time (torch's CUDA build and its nvidia-*
# wheels took ~8.5 min of a fresh setup on 2 cores), uv in parallel (< 1 min, bytecode compiled as pip does).
# uv reads no pip configuration, so it is given pip's indexes (this machine's disk holds torch, torchvision and
# the nvidia wheels), and like pip takes the best version across all of them (a tie: the local index's file).
UV_VERSION=0.13.9
uv_install() {
  local index url extra=()
  index=$("${PIP[@]}" config get global.index-url 2>/dev/null || echo https://pypi.org/simple)
  for url in $("${PIP[@]}" config get global.extra-index-url 2>/dev/null); do
    if [[ $url != file://* || -d ${url#file://} ]]; then extra+=(--extra-index-url "$url"); fi
  done
  "$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" --compile-bytecode \
    --index-strategy unsafe-best-match --index-url "$index" "${extra[@]}" "$@"
}

# 1. torch + torchvision (standard CUDA builds; on this machine both lie on disk)
REQ_HASH=$(cat requirements.txt tools/setup_env.sh | sha256sum | cut -c1-16)
if ! stamp_ok torch "$REQ_HASH"; then
  log "installing torch/torchvision and the pure-Python requirements"
  pip_run install -q --upgrade pip "uv==$UV_VERSION"
  uv_install torch==2.14.1 torchvision==0.29.1
  uv_install -r requirements.txt
  echo "$REQ_HASH" > "$STAMPS/torch"
fi

# 2. mmcv 2.1.0 with ops, from its sdist, patched for C++20 (torch 2.14 headers require it)
VARIANT=cpu; [ "${FORCE_CUDA:-0}" = 1 ] && VARIANT=cuda
if ! "$VENV/bin/python" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$MMCV_VERSION'" 2>/dev/null; then
  WHEEL=$(ls "$WHEELS"/$VARIANT/mmcv-$MMCV_VERSION-*.whl 2>/dev/null | head -1 || true)
  if [ -z "$WHEEL" ]; then
    log "building mmcv $MMCV_VERSION with ops from source ($VARIANT, ~15 min on 2 cores; cached afterwards)"
    BUILD=$(mktemp -d)
    pip_run download -q --no-deps --no-binary mmcv --no-build-isolation "mmcv==$MMCV_VERSION" -d "$BUILD"
    tar -xzf "$BUILD"/mmcv-$MMCV_VERSION.tar.gz -C "$BUILD"
    SRC=$BUILD/mmcv-$MMCV_VERSION
    sed -i -e 's/-std=c++14/-std=c++20/g' -e 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
    grep -q 'std=c++20' "$SRC/setup.py" || { echo "mmcv setup.py: C++ standard flag not found to patch" >&2; exit 1; }
    mkdir -p "$WHEELS/$VARIANT"
    (cd "$SRC" && export MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} && pip_run wheel -q --no-deps --no-build-isolation . -w "$WHEELS/$VARIANT")
    rm -rf "$BUILD"
    WHEEL=$(ls "$WHEELS"/$VARIANT/mmcv-$MMCV_VERSION-*.whl | head -1)
  fi
  log "installing $WHEEL"
  pip_run install -q --no-deps --force-reinstall "$WHEEL"
fi

# 3. mmdet / mmseg (their own deps, mmcv already satisfied)
if ! stamp_ok openmmlab "$REQ_HASH"; then
  log "installing mmdet 3.3.0 and mmsegmentation 1.2.2"
  uv_install mmdet==3.3.0 mmsegmentation==1.2.2
  echo "$REQ_HASH" > "$STAMPS/openmmlab"
fi

# 4. our package and its compiled ops (rebuilt when a C++ source or setup file changes)
EXT_HASH=$(cat setup.py pyproject.toml $(find ops/csrc -type f | sort) | sha256sum | cut -c1-16)
if ! stamp_ok localattn "$EXT_HASH" || ! "$VENV/bin/python" -c "import localattn.ops" 2>/dev/null; then
  log "building localattn (editable) and its compiled ops"
  pip_run install -q --no-build-isolation --no-deps -e .
  echo "$EXT_HASH" > "$STAMPS/localattn"
fi

# 5. fail loudly unless the whole stack imports
"$VENV/bin/python" - <<'PY'
import importlib, sys
import torch, torchvision, mmcv, mmengine, mmdet, mmseg, timm
from mmcv.ops import RoIAlign, nms  # compiled mmcv ops must be present
import localattn.ops, localattn.cls, localattn.det, localattn.seg
print(f"[setup] ok: torch {torch.__version__}, torchvision {torchvision.__version__}, mmcv {mmcv.__version__}, "
      f"mmengine {mmengine.__version__}, mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, timm {timm.__version__}")
PY
