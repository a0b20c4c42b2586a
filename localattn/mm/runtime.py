"""Fit a GPU-recipe config to the machine it runs on (each change is logged).

* distributed backend: NCCL with CUDA, gloo without;
* `AmpOptimWrapper` (mmengine's replacement of apex AMP) needs a GPU: CPU runs train in fp32;
* SyncBN needs CUDA: CPU runs use BN (mmengine only reverts SyncBN itself in non-distributed runs);
* mmengine's pytorch launcher calls `torch.cuda.set_device` and wraps DDP with `device_ids=[LOCAL_RANK]`:
  on CPU we start the gloo process group ourselves and wrap DDP without device ids;
* collectives time out after `env_cfg.dist_cfg.timeout` seconds (default `localattn.launch.DEFAULT_TIMEOUT`
  instead of gloo's 30 min), and a rank stops when its launcher dies (`localattn.launch`).
* CPU runs keep freed memory for reuse instead of page-faulting every large tensor anew (`localattn.memory`).

It also makes resume exact (`ReseedHook`, added to every training run).
"""
import datetime
import logging
import os

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS
from mmengine.runner import IterBasedTrainLoop

from localattn.launch import DEFAULT_TIMEOUT, watch_launcher
from localattn.memory import reuse_freed_cpu_memory
from localattn.seeding import derive_seed, seed_everything


def _log(message):
    print_log(f"localattn: {message}", logger="current", level=logging.INFO)


def _replace_sync_bn(node):
    """Turn every norm_cfg of type SyncBN under `node` into BN; returns how many were changed."""
    changed = 0
    if isinstance(node, dict):
        if node.get("type") == "SyncBN":
            node["type"] = "BN"
            changed += 1
        for value in node.values():
            changed += _replace_sync_bn(value)
    elif isinstance(node, list):
        changed += sum(_replace_sync_bn(value) for value in node)
    return changed


def adapt_to_device(cfg):
    """Apply the device-dependent settings of the module docstring to `cfg` in place."""
    cuda = torch.cuda.is_available()
    env_cfg = dict(cfg.get("env_cfg") or {})
    dist_cfg = dict(env_cfg.get("dist_cfg") or {})
    backend = "nccl" if cuda else "gloo"
    if dist_cfg.get("backend") != backend and (not cuda or "backend" not in dist_cfg):
        _log(f"distributed backend {backend} ({'CUDA' if cuda else 'no CUDA'})")
        dist_cfg["backend"] = backend
    dist_cfg.setdefault("timeout", DEFAULT_TIMEOUT)
    cfg.env_cfg = dict(env_cfg, dist_cfg=dist_cfg)
    if cuda:
        return cfg
    reuse_freed_cpu_memory()
    optim_wrapper = cfg.optim_wrapper
    if optim_wrapper.get("type") == "AmpOptimWrapper":
        _log("AmpOptimWrapper needs a GPU: training in fp32 with OptimWrapper")
        optim_wrapper["type"] = "OptimWrapper"
        for key in ("loss_scale", "dtype"):
            optim_wrapper.pop(key, None)
    if _replace_sync_bn(cfg.model):
        _log("SyncBN needs CUDA: using BN")
    if cfg.get("launcher", "none") != "none":
        wrapper = cfg.get("model_wrapper_cfg") or dict(
            broadcast_buffers=False, find_unused_parameters=cfg.get("find_unused_parameters", False))
        wrapper["device_ids"] = None
        cfg.model_wrapper_cfg = wrapper
    return cfg


def init_cpu_distributed(cfg):
    """Start the gloo process group of a CPU `--launcher pytorch` run (torchrun env vars); no-op otherwise.

    Every `--launcher pytorch` rank (CPU or GPU) also stops when its launcher dies."""
    if cfg.get("launcher", "none") == "pytorch" and "RANK" in os.environ:
        watch_launcher(int(os.environ["RANK"]))
    if torch.cuda.is_available() or cfg.get("launcher", "none") == "none" or torch.distributed.is_initialized():
        return
    if cfg.launcher != "pytorch":
        raise ValueError(f"--launcher {cfg.launcher} on a machine without CUDA: use tools/dist_train.sh "
                         "(torchrun, --launcher pytorch) for multi-process CPU runs")
    timeout = cfg.env_cfg.dist_cfg.timeout
    torch.distributed.init_process_group(backend="gloo", timeout=datetime.timedelta(seconds=timeout))
    _log(f"gloo process group started: rank {torch.distributed.get_rank()} of {torch.distributed.get_world_size()}")


class _ReseededBatches:
    """The iterator of an `IterBasedTrainLoop`'s dataloader, reseeding the main process before batch i."""

    def __init__(self, batches, seed, rank):
        self.batches, self.seed, self.rank, self.index = batches, seed, rank, 0

    def __iter__(self):
        return self

    def __next__(self):
        seed_everything(derive_seed(self.seed, self.index, self.rank))
        self.index += 1
        return next(self.batches)


@HOOKS.register_module()
class ReseedHook(Hook):
    """Random state as a pure function of (seed, epoch or iteration, rank), so `--resume` is bit-exact.

    mmengine seeds python/numpy/torch once per run, so a resumed run continues from a fresh seed where
    the uninterrupted one continued from the state it had reached. This hook reseeds the main process
    (augmentation with `num_workers=0`, RoI sampling, drop-path, dropout) with `derive_seed(seed, epoch,
    rank)` before every epoch of an `EpochBasedTrainLoop`, and with `derive_seed(seed, i, rank)` before
    batch i of an `IterBasedTrainLoop` (whose resume replays the batches it skips, so dataloader workers
    replay their random streams too). Dataloader workers are reseeded by mmengine when they start, that
    is every epoch unless `persistent_workers=True`: with persistent workers a resumed epoch-based run
    restarts their streams, and only the main process is exact.
    """

    priority = "VERY_HIGH"

    def before_train_epoch(self, runner):
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        loop = runner.train_loop
        if isinstance(loop, IterBasedTrainLoop):
            loop.dataloader_iterator = _ReseededBatches(loop.dataloader_iterator, runner.seed, rank)
        else:
            seed_everything(derive_seed(runner.seed, runner.epoch, rank))


def add_reseed_hook(cfg):
    """Add `ReseedHook` to the config's custom hooks (once)."""
    hooks = list(cfg.get("custom_hooks") or [])
    if not any(h.get("type") in ("ReseedHook", ReseedHook) for h in hooks):
        hooks.append(dict(type="ReseedHook"))
    cfg.custom_hooks = hooks
    return cfg
