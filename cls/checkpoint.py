"""Training checkpoints: atomic writes, last / per-epoch history / best, and full resume state.

Layout (timm's, so timm tools read them): `epoch`, `arch`, `state_dict` (no `module.` prefix),
`optimizer`, `scheduler`, `amp_scaler`, `state_dict_ema` (with --model-ema), `metric`, `args`,
`num_classes`, `class_to_idx`, `data_config`, `num_updates`, `version` = 2.
"""
import glob
import os
import re
import shutil

import torch

from localattn.convert.core import (CheckpointMismatchError, describe_checkpoint, fit_error, read_checkpoint,
                                    unwrap_state_dict)

LAST = "last.pth.tar"
BEST = "model_best.pth.tar"
HISTORY = "checkpoint-{epoch}.pth.tar"


def atomic_save(obj, path):
    """torch.save to `path` via a temporary file in the same folder + os.replace: never a truncated file."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _atomic_link(src, dst):
    """Make `dst` a copy of `src` atomically (hard link when the filesystem allows, else a copy)."""
    tmp = f"{dst}.tmp{os.getpid()}"
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class CheckpointKeeper:
    """Writes `last.pth.tar` every epoch, keeps the newest `history` per-epoch files and the best one."""

    def __init__(self, folder, history=10, best_metric=None):
        self.folder = folder
        self.history = history
        self.best_metric = best_metric

    def save(self, state, epoch, metric=None):
        """Save `state` for finished `epoch`; returns True when `metric` is a new best (higher is better)."""
        last = os.path.join(self.folder, LAST)
        atomic_save(state, last)
        if self.history > 0:
            _atomic_link(last, os.path.join(self.folder, HISTORY.format(epoch=epoch)))
            self._prune()
        is_best = metric is not None and (self.best_metric is None or metric > self.best_metric)
        if is_best:
            self.best_metric = metric
            _atomic_link(last, os.path.join(self.folder, BEST))
        return is_best

    def _prune(self):
        pattern = re.compile(r"checkpoint-(\d+)\.pth\.tar$")
        found = sorted((int(m.group(1)), p) for p in glob.glob(os.path.join(self.folder, "checkpoint-*.pth.tar"))
                       if (m := pattern.search(p)))
        for _, path in found[:-self.history]:
            os.remove(path)


def training_state(model, optimizer, schedule, scaler, ema, epoch, num_updates, metric, args, extra):
    """The dict saved each epoch (`model` and `ema` unwrapped; `extra` adds dataset/model metadata)."""
    state = {
        "epoch": epoch, "arch": args.model, "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": schedule.state_dict(), "amp_scaler": scaler.state_dict(), "num_updates": num_updates,
        "metric": metric, "args": vars(args), "version": 2, **extra,
    }
    if ema is not None:
        state["state_dict_ema"] = ema.module.state_dict()
    return state


def restore_training_state(path, model, optimizer, schedule, scaler, ema):
    """Load everything `training_state` saved; returns (next epoch, num_updates, best metric so far, the
    mid-epoch position of an iteration checkpoint or None)."""
    state = read_checkpoint(path)
    missing = [k for k in ("epoch", "state_dict", "optimizer", "scheduler", "amp_scaler") if k not in state]
    if missing:
        raise CheckpointMismatchError(f"--resume {path}: not a localattn training checkpoint (missing {missing}; it "
                                      f"is {describe_checkpoint(state, unwrap_state_dict(state))})")
    error = fit_error(model, state["state_dict"], state, f"--resume {path}",
                      hint="resume with the --model / --model-kwargs it was trained with")
    if error:
        raise error
    model.load_state_dict(state["state_dict"], strict=True)
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["amp_scaler"])
    if ema is not None:
        if "state_dict_ema" not in state:
            raise CheckpointMismatchError(f"--resume {path}: --model-ema is on but the checkpoint has no state_dict_ema")
        ema.module.load_state_dict(state["state_dict_ema"], strict=True)
    return (state["epoch"] + 1, state.get("num_updates", 0), state.get("best_metric", state.get("metric")),
            state.get("iteration"))
