"""What the shared tools report: the final metrics table of every train / test run, and `curves.png` (loss per
iteration, validation metrics) in the work dir of every training run."""
import os
import re

import torch
from mmengine.dist import master_only
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


def format_metrics_table(metrics, title):
    """A two-column text table of `metrics` (name -> number or string)."""
    rows = [(str(name), f"{value:.4f}" if isinstance(value, float) else str(value)) for name, value in metrics.items()]
    width = max([len("metric")] + [len(name) for name, _ in rows])
    lines = [title, f"{'metric':<{width}}  value", f"{'-' * width}  -----"]
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    return "\n".join(lines)


@HOOKS.register_module(name="LocalattnMetricsTableHook")
class MetricsTableHook(Hook):
    """Remembers the last validation / test metrics and prints them as a table when the run ends."""

    priority = "LOWEST"

    def __init__(self):
        self.metrics, self.title = None, None

    def after_val_epoch(self, runner, metrics=None):
        if metrics:
            self.metrics, self.title = dict(metrics), f"final validation metrics (epoch {runner.epoch}, iter {runner.iter})"

    def after_test_epoch(self, runner, metrics=None):
        if metrics:
            self.metrics, self.title = dict(metrics), f"test metrics ({runner.cfg.get('load_from')})"

    @master_only
    def after_run(self, runner):
        if self.metrics:
            print("\n" + format_metrics_table(self.metrics, self.title), flush=True)


# the headline metrics drawn in curves.png (all numeric ones when none of these is present)
HEADLINE_METRICS = re.compile(r"(bbox_mAP|segm_mAP|bbox_mAP_50|segm_mAP_50|mIoU|mAcc|aAcc)$")


@HOOKS.register_module(name="LocalattnCurvesHook")
class CurvesHook(Hook):
    """Keeps the training loss of every iteration and the validation metrics, and redraws
    `<work_dir>/curves.png` at the end of every training epoch, every validation and of training."""

    priority = "LOWEST"

    def __init__(self):
        self.losses, self.metrics = [], []  # (iteration, {name: value})

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        values = {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in (outputs or {}).items()
                  if k.startswith("loss") and (isinstance(v, (int, float)) or torch.is_tensor(v) and v.numel() == 1)}
        if values:
            self.losses.append((runner.iter + 1, values))

    def after_val_epoch(self, runner, metrics=None):
        values = {k: float(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float))}
        if values:
            self.metrics.append((runner.iter, values))
        self.write(runner)

    def after_train_epoch(self, runner):
        self.write(runner)

    def after_train(self, runner):
        self.write(runner)

    @staticmethod
    def series(records, keep=lambda name: True):
        names = dict.fromkeys(n for _, values in records for n in values if keep(n))
        return {n: tuple(zip(*[(i, v[n]) for i, v in records if n in v])) for n in names}

    @master_only
    def write(self, runner):
        from localattn.viz.curves import CURVES_FILE, plot_curves

        headline = [n for _, values in self.metrics for n in values if HEADLINE_METRICS.search(n)]
        metrics = self.series(self.metrics, (lambda n: n in headline) if headline else (lambda n: True))
        return plot_curves({"training loss": self.series(self.losses), "validation": metrics},
                           os.path.join(runner.work_dir, CURVES_FILE), f"training curves: {runner.work_dir}", "iteration")


def add_hook(cfg, hook_type):
    """Append `dict(type=hook_type)` to `cfg.custom_hooks` (once)."""
    hooks = list(cfg.get("custom_hooks") or [])
    if not any(h.get("type") == hook_type for h in hooks):
        cfg.custom_hooks = hooks + [dict(type=hook_type)]


def add_metrics_table_hook(cfg):
    """The final metrics table, for train and test runs."""
    add_hook(cfg, "LocalattnMetricsTableHook")


def add_curves_hook(cfg):
    """`curves.png` in the work dir, for training runs."""
    add_hook(cfg, "LocalattnCurvesHook")
