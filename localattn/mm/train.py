"""`tools/train.py CONFIG [flags]` for det/seg configs: mmengine's Runner behind the original command line."""
import logging
import os

import torch
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from . import cli
from .report import add_metrics_table_hook
from .runtime import adapt_to_device, init_cpu_distributed
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
    adapt_to_device(cfg)
    init_cpu_distributed(cfg)
    if os.environ.get("LOCAL_RANK", "0") == "0":  # once per machine; a failure stops the whole job
        task.check_data(cfg, ("train",) if cfg.get("val_dataloader") is None else ("train", "val"))
    add_metrics_table_hook(cfg)
    build_runner(cfg).train()
    return 0
