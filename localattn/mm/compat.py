"""Checkpoint loading in mmengine 0.10.7: one safe reader, and no partial load without being asked.

1. mmengine's local checkpoint loader calls `torch.load(filename, map_location=...)`, which since torch 2.6 means
   `weights_only=True` without an allow-list, so it refuses mmengine's own training checkpoints (their
   `message_hub` holds `HistoryBuffer` objects and numpy arrays). `install()` registers
   `localattn.convert.read_checkpoint` as mmengine's loader for local paths (`load_from`, `--resume`,
   `tools/test.py CONFIG CKPT`, `init_cfg` Pretrained): `weights_only=True` with the explicit allow-list of
   `localattn.convert.core.safe_globals`, `.safetensors` accepted, and a checkpoint pickling anything else
   refused with a one-line error naming the file and the type — never unpickled fully.
2. mmengine loads `load_from` / resume checkpoints with `strict=False`, so a checkpoint of another model gives
   a number after a warning. `add_strict_load_hook` adds `StrictLoadHook`, which refuses (or, with
   `allow_partial`, logs) a checkpoint that does not fill the model, saying what the checkpoint is.
"""
import logging
import os
import re

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner.checkpoint import CheckpointLoader, find_latest_checkpoint

from localattn.convert import read_checkpoint
from localattn.convert.core import dense_task, fit_error

_installed = False


def _load_local(filename, map_location=None):
    """mmengine loader for local paths (`map_location` is ignored: tensors land on CPU and are copied into
    the model's device by `load_state_dict`)."""
    return read_checkpoint(os.path.expanduser(filename))


def install():
    """Route mmengine's local checkpoint loading through `read_checkpoint` (idempotent, logs once)."""
    global _installed
    if _installed:
        return
    CheckpointLoader.register_scheme(prefixes="", loader=_load_local, force=True)
    _installed = True
    print_log("localattn: mmengine reads local checkpoints with torch.load(weights_only=True) and an explicit "
              "allow-list (localattn.convert.read_checkpoint); anything else is refused, never unpickled",
              logger="current", level=logging.INFO)


@HOOKS.register_module(name="LocalattnStrictLoadHook")
class StrictLoadHook(Hook):
    """Before mmengine copies a loaded checkpoint into the model: it must fill the model exactly.

    Raises `CheckpointMismatchError` (one line: missing / unexpected / mis-shaped keys, what the checkpoint
    is, what to do) unless `allow_partial`, which logs that line as a warning and lets mmengine load the
    matching keys.
    """

    priority = "VERY_HIGH"

    def __init__(self, allow_partial=False):
        self.allow_partial = allow_partial

    def after_load_checkpoint(self, runner, checkpoint):
        model = runner.model
        while is_model_wrapper(model) or isinstance(model, BaseTTAModel):  # as mmengine's load_state_dict
            model = model.module
        state = checkpoint.get("state_dict", checkpoint)
        state = {re.sub(r"^module\.", "", k): v for k, v in state.items()}  # mmengine's own revise_keys
        source = runner.cfg.get("load_from") or find_latest_checkpoint(runner.work_dir)
        if dense_task(state):
            advice = "evaluate it with the config it was trained with"
        else:
            advice = f"to initialise the backbone from it pass --cfg-options model.pretrained={source}"
        error = fit_error(model, state, checkpoint, source,
                          hint=f"{advice} (--allow-partial-checkpoint loads only the matching keys)")
        if error and not self.allow_partial:
            raise error
        if error:
            print_log(f"--allow-partial-checkpoint: loading only the matching keys: {error}", logger="current",
                      level=logging.WARNING)


def add_strict_load_hook(cfg, allow_partial=False):
    """Append `StrictLoadHook` to `cfg.custom_hooks` (once)."""
    hooks = [h for h in cfg.get("custom_hooks") or [] if h.get("type") != "LocalattnStrictLoadHook"]
    cfg.custom_hooks = hooks + [dict(type="LocalattnStrictLoadHook", allow_partial=allow_partial)]
