"""`tools/train.py CONFIG [flags]` for det/seg configs: mmengine's Runner behind the original command line."""
import logging
import sys

import torch
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from localattn.cli import UsageError
from localattn.datacheck import DataCheckError

from . import cli
from .compat import add_strict_load_hook
from .report import add_curves_hook, add_metrics_table_hook
from .runtime import adapt_to_device, add_reseed_hook, init_cpu_distributed
from .tasks import task_of


def select_device(args):
    """Legacy `--gpus N` / `--gpu-ids I`: a non-distributed run uses exactly one device."""
    if (args.gpus or 0) > 1 or len(args.gpu_ids or []) > 1:
        raise SystemExit("tools/train.py: --gpus/--gpu-ids select one device of a non-distributed run; "
                         "for N GPUs run tools/dist_train.sh CONFIG N")
    if args.gpu_ids and torch.cuda.is_available():
        torch.cuda.set_device(args.gpu_ids[0])


def apply_train_args(cfg, args):
    """Turn the training flags into config settings."""
    cfg.work_dir = cli.default_work_dir(cfg, args)
    cfg.launcher = args.launcher
    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    if args.amp:
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.setdefault("loss_scale", "dynamic")
    if args.auto_scale_lr:
        if "auto_scale_lr" not in cfg:
            raise KeyError("--auto-scale-lr: the config defines no auto_scale_lr=dict(base_batch_size=...)")
        cfg.auto_scale_lr.enable = True
    if args.load_from:
        cfg.load_from = args.load_from
    resume = args.resume_from or args.resume
    if resume:
        cfg.resume = True
        cfg.load_from = None if resume == "auto" else resume
    if args.data_check:
        cfg.data_check = args.data_check
    if args.dist_timeout is not None:
        if args.dist_timeout <= 0:
            raise UsageError(f"--dist-timeout must be > 0 seconds, got {args.dist_timeout}")
        cfg.env_cfg = dict(cfg.get("env_cfg") or {})
        cfg.env_cfg["dist_cfg"] = dict(cfg.env_cfg.get("dist_cfg") or {}, timeout=args.dist_timeout)
    if args.seed is not None or args.deterministic:
        randomness = dict(cfg.get("randomness") or {}, deterministic=args.deterministic)
        if args.seed is not None:
            randomness["seed"] = args.seed
        cfg.randomness = randomness
    return cfg


def build_runner(cfg):
    """The codebase's runner (`runner_type`) or mmengine's default one."""
    return RUNNERS.build(cfg) if "runner_type" in cfg else Runner.from_cfg(cfg)


def main(argv=None):
    args = cli.train_parser().parse_args(argv)
    cli.set_local_rank(args)
    select_device(args)
    cfg = cli.load_config(args.config, {**args.options, **args.cfg_options})
    if args.options:
        print_log("--options is deprecated, use --cfg-options", logger="current", level=logging.WARNING)
    task = task_of(cfg)
    apply_train_args(cfg, args)
    cli.check_train_args(cfg, args)
    add_strict_load_hook(cfg, args.allow_partial_checkpoint)
    adapt_to_device(cfg)
    # every rank, before any collective: the first rank of a machine fills the check's cache, the others read it
    try:
        task.check_data(cfg, ("train",) if cfg.get("val_dataloader") is None else ("train", "val"))
    except (DataCheckError, FileNotFoundError) as err:
        print(f"tools/train.py: error: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        return 2
    init_cpu_distributed(cfg)
    add_reseed_hook(cfg)
    add_metrics_table_hook(cfg)
    add_curves_hook(cfg)
    build_runner(cfg).train()
    return 0
