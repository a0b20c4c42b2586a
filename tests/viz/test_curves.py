"""curves.png: one plotting function, fed by the classification trainer's summary rows and by the mmengine hook
of the det/seg tools; the lines drawn are exactly the logged numbers. (The tiny end-to-end runs of
tests/cls, tests/det and tests/seg check that the real tools write the file into every run folder.)"""
import types

import numpy as np
from PIL import Image

from localattn.cls.monitor import write_curves
from localattn.mm.report import CurvesHook, add_curves_hook
from localattn.viz.curves import CURVES_FILE


def lines(fig):
    """{(panel title, label): (xs, ys)} of every line drawn."""
    return {(ax.get_title(), line.get_label()): (list(line.get_xdata()), list(line.get_ydata()))
            for ax in fig.axes for line in ax.get_lines()}


def test_cls_curves_draw_the_summary_rows(tmp_path):
    rows = [{"epoch": "0", "lr": "0.001", "train_loss": "1.5", "val_loss": "1.25", "top1": "40.0", "top5": "90.0"},
            {"epoch": "1", "lr": "0.0005", "train_loss": "0.75", "val_loss": "0.5", "top1": "80.0", "top5": "100.0"}]
    fig = write_curves(rows, str(tmp_path))
    assert lines(fig) == {
        ("loss", "train_loss"): ([0, 1], [1.5, 0.75]), ("loss", "val_loss"): ([0, 1], [1.25, 0.5]),
        ("validation accuracy (%)", "top1"): ([0, 1], [40.0, 80.0]),
        ("validation accuracy (%)", "top5"): ([0, 1], [90.0, 100.0]),
        ("learning rate", "lr"): ([0, 1], [0.001, 0.0005])}
    with Image.open(tmp_path / CURVES_FILE) as png:
        assert png.format == "PNG" and png.size == (3 * 420, 340)
        assert np.asarray(png.convert("L")).std() > 10  # something is drawn


def test_mm_hook_draws_losses_per_iteration_and_headline_metrics(tmp_path):
    import torch

    hook = CurvesHook()
    runner = types.SimpleNamespace(work_dir=str(tmp_path), iter=0)
    for i, loss in enumerate([2.0, 1.5, 1.0, 0.5]):
        runner.iter = i
        hook.after_train_iter(runner, i, outputs={"loss": torch.tensor(loss), "loss_cls": torch.tensor(loss / 2),
                                                  "acc": torch.tensor(50.0)})
    hook.after_train_epoch(runner)
    runner.iter = 4
    hook.after_val_epoch(runner, {"coco/bbox_mAP": 0.25, "coco/bbox_mAP_s": 0.1, "coco/segm_mAP": 0.5, "note": "x"})
    fig = hook.write(runner)
    assert lines(fig) == {("training loss", "loss"): ([1, 2, 3, 4], [2.0, 1.5, 1.0, 0.5]),
                          ("training loss", "loss_cls"): ([1, 2, 3, 4], [1.0, 0.75, 0.5, 0.25]),
                          ("validation", "coco/bbox_mAP"): ([4], [0.25]), ("validation", "coco/segm_mAP"): ([4], [0.5])}
    with Image.open(tmp_path / CURVES_FILE) as png:
        assert png.size == (2 * 420, 340)


def test_curves_hook_is_added_once_beside_the_metrics_table():
    cfg = types.SimpleNamespace(custom_hooks=[dict(type="LocalattnMetricsTableHook")])
    cfg.get = lambda key, default=None: getattr(cfg, key, default)
    add_curves_hook(cfg)
    add_curves_hook(cfg)
    assert [h["type"] for h in cfg.custom_hooks] == ["LocalattnMetricsTableHook", "LocalattnCurvesHook"]
