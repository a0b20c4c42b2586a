"""What the shared train/test tools need to know about each OpenMMLab codebase (mmdet, mmseg).

A config's `default_scope` picks its `Task`; `localattn.det` and `localattn.seg` register theirs on import
(their configs import them through `custom_imports`).
"""
import importlib
import logging
from dataclasses import dataclass
from typing import Callable

from mmengine.logging import print_log

# default_scope -> the localattn package that registers its Task
TASK_PACKAGES = {"mmdet": "localattn.det", "mmseg": "localattn.seg"}

_TASKS = {}


@dataclass(frozen=True)
class Task:
    """Per-codebase behaviour of the shared tools.

    scope: the configs' `default_scope`.
    metric_arg: evaluator argument that `--eval` sets (CocoMetric `metric`, IoUMetric `iou_metrics`).
    metrics: the values `--eval` accepts (what that evaluator argument allows).
    legacy_test_options: what the original test.py's `--options` meant ('eval_options' or 'cfg_options').
    output_arg: evaluator argument naming where `--format-only` writes (CocoMetric `outfile_prefix`).
    check_data(cfg, splits): validate the dataset files of the splits ('train', 'val', 'test') up front.
    dump_predictions(runner, out): make `runner.test()` write raw predictions to `out` (`--out`).
    show(cfg, args): enable drawing of predictions (`--show`, `--show-dir`).
    prepare_tta(cfg): task-specific changes before the generic `--tta` swap (may be a no-op).
    """
    scope: str
    metric_arg: str
    metrics: tuple
    legacy_test_options: str
    output_arg: str
    check_data: Callable
    dump_predictions: Callable
    show: Callable
    prepare_tta: Callable


def register_task(task):
    """Make `task` available to the tools for configs whose default_scope is `task.scope`."""
    _TASKS[task.scope] = task
    return task


def task_of(cfg):
    """The Task of a config, importing its registering package if needed."""
    scope = cfg.get("default_scope")
    if scope not in _TASKS and scope in TASK_PACKAGES:
        importlib.import_module(TASK_PACKAGES[scope])
    if scope not in _TASKS:
        raise ValueError(f"config default_scope={scope!r} is not served by the localattn tools; "
                         f"expected one of {sorted(TASK_PACKAGES)}")
    return _TASKS[scope]


def evaluator_cfgs(cfg, split):
    """The metric dicts of `<split>_evaluator` (a dict or a list of dicts)."""
    evaluator = cfg.get(f"{split}_evaluator")
    if evaluator is None:
        return []
    return list(evaluator) if isinstance(evaluator, list) else [evaluator]


def set_metrics(cfg, task, metrics):
    """`--eval m1 m2`: the test evaluator computes exactly these metrics."""
    for metric_cfg in evaluator_cfgs(cfg, "test"):
        metric_cfg[task.metric_arg] = list(metrics)


def swap_in_tta(cfg):
    """`--tta`: wrap the model into the config's `tta_model` and test with its `tta_pipeline`."""
    missing = [key for key in ("tta_model", "tta_pipeline") if key not in cfg]
    if missing:
        raise KeyError(f"--tta: the config defines no {' / '.join(missing)}")
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model
    print_log("localattn: test-time augmentation with the config's tta_pipeline", logger="current",
              level=logging.INFO)
