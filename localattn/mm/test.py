"""`tools/test.py CONFIG CHECKPOINT [flags]` for det/seg configs: mmengine's Runner.test behind the original
command line (`--eval bbox segm`, `--eval-options`, `--out`, `--format-only`, `--show-dir`, `--tta`, ...)."""
import logging
import os
import os.path as osp

from mmengine.logging import print_log

from . import cli
from .compat import add_strict_load_hook
from .report import add_metrics_table_hook
from .runtime import adapt_to_device, init_cpu_distributed
from .tasks import evaluator_cfgs, set_metrics, swap_in_tta, task_of
from .train import build_runner


def split_legacy_options(cfg_path, args):
    """Route the legacy `--options` (det: evaluator arguments; seg: config overrides) -> (cfg_opts, eval_opts)."""
    cfg_options, eval_options = dict(args.cfg_options), dict(args.eval_options)
    if args.options:
        from mmengine.config import Config
        meaning = task_of(Config.fromfile(cfg_path)).legacy_test_options
        (eval_options if meaning == "eval_options" else cfg_options).update(args.options)
        print_log(f"--options is deprecated; for this config it means --{meaning.replace('_', '-')}",
                  logger="current", level=logging.WARNING)
    return cfg_options, eval_options


def apply_test_args(cfg, args, task, eval_options):
    """Turn the evaluation flags into config settings."""
    cfg.work_dir = cli.default_work_dir(cfg, args)
    cfg.launcher = args.launcher
    cfg.load_from = args.checkpoint
    cfg.resume = False
    cfg.model.backbone.pop("init_cfg", None)  # the checkpoint holds every weight; no pretrained read
    if args.eval:
        set_metrics(cfg, task, args.eval)
    for metric_cfg in evaluator_cfgs(cfg, "test"):
        metric_cfg.update(eval_options)
        if args.format_only:
            metric_cfg["format_only"] = True
            metric_cfg.setdefault(task.output_arg, osp.join(cfg.work_dir, "results"))
        if args.gpu_collect:
            metric_cfg["collect_device"] = "gpu"
        if args.tmpdir:
            metric_cfg["collect_dir"] = args.tmpdir
    if args.show or args.show_dir:
        task.show(cfg, args)
    if args.tta:
        task.prepare_tta(cfg)
        swap_in_tta(cfg)
    return cfg


def main(argv=None):
    """Evaluate; every flag, path and metric name is checked before any data is read or model built."""
    args = cli.test_parser().parse_args(argv)
    cli.set_local_rank(args)
    if not osp.isfile(args.config):
        raise cli.UsageError(f"config file not found: {args.config}")
    if not osp.isfile(args.checkpoint):
        raise cli.UsageError(f"checkpoint file not found: {args.checkpoint}")
    cfg_options, eval_options = split_legacy_options(args.config, args)
    cfg = cli.load_config(args.config, cfg_options)
    task = task_of(cfg)
    cli.check_metrics(task, args.eval)
    for flag, path in (("--work-dir", args.work_dir), ("--out", args.out), ("--show-dir", args.show_dir)):
        cli.check_writable(flag, path)
    apply_test_args(cfg, args, task, eval_options)
    add_strict_load_hook(cfg, args.allow_partial_checkpoint)
    adapt_to_device(cfg)
    init_cpu_distributed(cfg)
    if os.environ.get("LOCAL_RANK", "0") == "0":  # once per machine; a failure stops the whole job
        task.check_data(cfg, ("test",))
    add_metrics_table_hook(cfg)
    runner = build_runner(cfg)
    if args.out:
        task.dump_predictions(runner, args.out)
    runner.test()
    return 0
