"""mmengine 0.10.7 on torch >= 2.6: checkpoint loading without the `weights_only` argument.

mmengine's local checkpoint loader calls `torch.load(filename, map_location=...)`. Since torch 2.6 that
means `weights_only=True`, which refuses mmengine's own training checkpoints (their `message_hub` holds
`HistoryBuffer` objects and numpy arrays) and the mmcv 1.x checkpoints of the original release. We fix it
once, here, by

1. allow-listing the few globals an mmengine checkpoint pickles (HistoryBuffer, numpy arrays/scalars, the
   Counter of MultiStepLR milestones), and saving HistoryBuffers without their class-level statistics
   methods (mmengine pickles them as `getattr(HistoryBuffer, 'min')`, which must not be allow-listed; every
   process registers them on the class anyway), so our own checkpoints (resume, `tools/test.py`) load with
   the safe `weights_only=True`, and
2. replacing mmengine's loader for local paths with `localattn.convert.read_checkpoint`, which falls back
   to full unpickling (with a warning naming the file) only for checkpoints that need it.
"""
import _codecs
import collections
import logging
import os

import numpy as np
import torch
from mmengine.logging import HistoryBuffer, print_log
from mmengine.runner.checkpoint import CheckpointLoader

from localattn.convert import read_checkpoint

_installed = False

# What an mmengine checkpoint pickles besides tensors: MessageHub log buffers (HistoryBuffer wrapping numpy
# arrays of float64 / int64 scalars).
_NP_MULTIARRAY = (np._core if hasattr(np, "_core") else np.core).multiarray
_MMENGINE_GLOBALS = [HistoryBuffer, collections.Counter, _codecs.encode, np.ndarray, np.dtype,
                     _NP_MULTIARRAY._reconstruct, _NP_MULTIARRAY.scalar,
                     *(type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32, np.bool_))]


def _history_buffer_state(buffer):
    """HistoryBuffer state without the class-level `statistics_methods` (see the module docstring)."""
    return {k: v for k, v in buffer.__dict__.items() if k != "statistics_methods"}


def _load_local(filename, map_location=None):
    """mmengine loader for local paths (`map_location` is ignored: tensors land on CPU and are copied into
    the model's device by `load_state_dict`)."""
    return read_checkpoint(os.path.expanduser(filename))


def install():
    """Make mmengine's checkpoint loading work on torch >= 2.6 (idempotent, logs once)."""
    global _installed
    if _installed:
        return
    torch.serialization.add_safe_globals(_MMENGINE_GLOBALS)
    HistoryBuffer.__getstate__ = _history_buffer_state
    CheckpointLoader.register_scheme(prefixes="", loader=_load_local, force=True)
    _installed = True
    print_log("localattn: mmengine checkpoints load with torch.load(weights_only=True) + allow-listed "
              "HistoryBuffer/numpy globals; other checkpoints fall back to full unpickling with a warning "
              "(localattn/mm/compat.py)", logger="current", level=logging.INFO)
