"""Fit a GPU-recipe config to the machine it runs on (each change is logged).

* distributed backend: NCCL with CUDA, gloo without;
* `AmpOptimWrapper` (mmengine's replacement of apex AMP) needs a GPU: CPU runs train in fp32;
* SyncBN needs CUDA: CPU runs use BN (mmengine only reverts SyncBN itself in non-distributed runs);
* mmengine's pytorch launcher calls `torch.cuda.set_device` and wraps DDP with `device_ids=[LOCAL_RANK]`:
  on CPU we start the gloo process group ourselves and wrap DDP without device ids.
"""
import datetime
import logging

import torch
from mmengine.logging import print_log


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
    cfg.env_cfg = dict(env_cfg, dist_cfg=dist_cfg)
    if cuda:
        return cfg
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
    """Start the gloo process group of a CPU `--launcher pytorch` run (torchrun env vars); no-op otherwise."""
    if torch.cuda.is_available() or cfg.get("launcher", "none") == "none" or torch.distributed.is_initialized():
        return
    if cfg.launcher != "pytorch":
        raise ValueError(f"--launcher {cfg.launcher} on a machine without CUDA: use tools/dist_train.sh "
                         "(torchrun, --launcher pytorch) for multi-process CPU runs")
    timeout = cfg.env_cfg.dist_cfg.get("timeout", 1800)
    torch.distributed.init_process_group(backend="gloo", timeout=datetime.timedelta(seconds=timeout))
    _log(f"gloo process group started: rank {torch.distributed.get_rank()} of {torch.distributed.get_world_size()}")
