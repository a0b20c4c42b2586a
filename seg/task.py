"""What the shared `tools/train.py` / `tools/test.py` (`localattn.mm`) do differently for mmseg configs.

* `--eval mIoU mDice mFscore` → `IoUMetric(iou_metrics=[...])`;
* legacy `--options k=v` (mmseg 0.x test.py) = config overrides;
* `--out X.pkl` → a pickle of `{img_path, pred_sem_seg}` per image (the argmax maps, as mmseg 0.x wrote);
  `--out DIR` → one PNG of predicted labels per image (mmseg 1.x `IoUMetric(output_dir=DIR)`);
* `--format-only` → only those PNGs (default `<work_dir>/results`), no metrics;
* `--show` / `--show-dir DIR` → `SegVisualizationHook` draws every image's ground truth | prediction
  (into `DIR/vis_data/vis_image`);
* `--tta` / `--aug-test` → the config's `tta_model` + `tta_pipeline` (6 scales × flip for our ADE20K configs);
* the dataset folders of every split in use are checked before the runner starts.
"""
import os
import os.path as osp

import numpy as np
from mmengine.evaluator import DumpResults
from mmengine.fileio import dump
from mmengine.logging import print_log
from mmseg.datasets import ADE20KDataset
from mmseg.registry import DATASETS, METRICS

from localattn.mm.tasks import Task, register_task

from .datasets import check_ade20k_files, check_ade20k_layout


@METRICS.register_module()
class DumpSegPredictions(DumpResults):
    """Pickle a list of `dict(img_path=str, pred_sem_seg=np.ndarray[H, W])` (label ids, int64) to a .pkl file."""

    def process(self, data_batch, predictions):
        self.results.extend(dict(img_path=sample["img_path"],
                                 pred_sem_seg=sample["pred_sem_seg"]["data"].squeeze(0).cpu().numpy().astype(np.int64))
                            for sample in predictions)

    def compute_metrics(self, results):
        dump(results, self.out_file_path)
        print_log(f"predicted label maps of {len(results)} images saved to {self.out_file_path}", logger="current")
        return {}


def _num_classes(cfg, dataset):
    """The class count the model's loss indexes with (decode head), else the dataset's classes."""
    head = cfg.model.get("decode_head") or {}
    if "num_classes" in head:
        return head["num_classes"]
    return len((dataset.get("metainfo") or {}).get("classes") or ADE20KDataset.METAINFO["classes"])


def check_data(cfg, splits):
    """Check each split's dataset up front, naming the files: the folder layout and image ↔ annotation
    pairing, then every label map against its image and the classes (policy `cfg.data_check`, default
    'fail'; 'skip' leaves the bad pairs out of a `CheckedADE20KDataset`)."""
    policy = cfg.get("data_check") or "fail"
    for split in splits:
        dataset = cfg.get(f"{split}_dataloader", {}).get("dataset", {})
        prefix = dataset.get("data_prefix")
        if not prefix:  # wrapped or non-folder datasets check themselves when built
            continue
        root = dataset.get("data_root") or ""
        ann = prefix.get("seg_map_path")
        img_dir, ann_dir = osp.join(root, prefix["img_path"]), ann and osp.join(root, ann)
        suffixes = dataset.get("img_suffix", ".jpg"), dataset.get("seg_map_suffix", ".png")
        check_ade20k_layout(img_dir, ann_dir, *suffixes, data_root=root)
        if ann_dir is None:
            continue
        kind = dataset["type"] if isinstance(dataset["type"], type) else DATASETS.get(dataset["type"])
        reduce_zero_label = dataset.get("reduce_zero_label", kind is not None and issubclass(kind, ADE20KDataset))
        skipped = check_ade20k_files(img_dir, ann_dir, _num_classes(cfg, dataset), reduce_zero_label, policy,
                                     *suffixes, ignore_index=dataset.get("ignore_index", 255))
        if skipped:
            dataset["skip_files"] = sorted(skipped)


def dump_predictions(runner, out):
    """`--out`: a .pkl file of argmax maps, or a directory of PNG label maps."""
    if out.endswith((".pkl", ".pickle")):
        runner.test_evaluator.metrics.append(DumpSegPredictions(out_file_path=out))
        return
    os.makedirs(out, exist_ok=True)
    for metric in runner.test_evaluator.metrics:
        if hasattr(metric, "output_dir"):
            metric.output_dir = out
    print_log(f"predicted label maps will be written as PNGs into {out}", logger="current")


def show(cfg, args):
    """`--show` / `--show-dir`: draw predictions with the config's SegVisualizationHook."""
    hook = cfg.default_hooks.get("visualization")
    if hook is None:
        raise KeyError("--show/--show-dir: the config's default_hooks has no 'visualization' hook")
    hook["draw"] = True
    hook["interval"] = 1  # every image, as mmseg 0.x did (mmseg 1.x draws every 50th by default)
    if args.show:
        hook["show"] = True
        hook["wait_time"] = args.wait_time
    if args.show_dir:
        cfg.visualizer["save_dir"] = args.show_dir
        cfg.visualizer["vis_backends"] = [dict(type="LocalVisBackend")]


def prepare_tta(cfg):
    """Nothing seg-specific: the configs' tta_pipeline already loads annotations for IoUMetric."""


SEG_TASK = register_task(Task(scope="mmseg", metric_arg="iou_metrics", metrics=("mIoU", "mDice", "mFscore"),
                              legacy_test_options="cfg_options",
                              output_arg="output_dir", check_data=check_data, dump_predictions=dump_predictions,
                              show=show, prepare_tta=prepare_tta))
