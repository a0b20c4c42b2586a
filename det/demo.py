"""Detection part of `make demo`: synthetic COCO data -> `tools/train.py` -> `tools/test.py --eval bbox segm
--show-dir`.

A small ELSA-Swin Mask R-CNN (configs/det/synthetic/mask_elsa_synthetic.py) is trained from scratch on CPU
with the real tools; their whole output (config dump, COCO tables) goes to `<out_dir>/demo.log`.
"""
import contextlib
import os
import re
import time

from localattn.demo import DemoResult, images_under, latest_test_metrics, regex_progress, run_tool, say

from .synthetic import make_synthetic_coco

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "det", "synthetic", "mask_elsa_synthetic.py")
NUM_TRAIN, NUM_VAL = 48, 16
TRAIN_LINE = re.compile(r"Epoch\(train\)\s*\[(\d+)\]\[\s*(\d+)/(\d+)\]")


def epoch_progress(epochs):
    """`run_tool` progress over all iterations, from mmengine's `Epoch(train) [e][i/n]` lines."""
    def parse(line):
        match = TRAIN_LINE.search(line)
        if match:
            epoch, done, per_epoch = map(int, match.groups())
            return (epoch - 1) * per_epoch + done, epochs * per_epoch
    return parse


def main(out_dir="demo_output/det", epochs=8):
    """Generate the data under `out_dir`/data, train `epochs` epochs into `out_dir`/work, test; a DemoResult."""
    if not os.path.isfile(CONFIG):
        raise FileNotFoundError(f"demo config not found: {CONFIG} (run the demo from a source checkout)")
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    start = time.time()
    with open(os.path.join(out_dir, "demo.log"), "w") as log:
        with contextlib.redirect_stdout(log):
            data_root = make_synthetic_coco(os.path.join(out_dir, "data"), num_train=NUM_TRAIN, num_val=NUM_VAL)
        described = f"synthetic COCO shapes, 3 classes, {NUM_TRAIN} train / {NUM_VAL} val, 128px"
        say(log, f"data: {described} ({data_root})")
        work_dir, test_dir = os.path.join(out_dir, "work"), os.path.join(out_dir, "test")
        predictions = os.path.join(out_dir, "predictions")
        data = ["--cfg-options", f"data_root={data_root}"]
        run_tool("train.py", [CONFIG, "--work-dir", work_dir, "--seed", "0", *data, f"train_cfg.max_epochs={epochs}"],
                 log, "det train (iters)", epoch_progress(epochs))
        run_tool("test.py", [CONFIG, os.path.join(work_dir, f"epoch_{epochs}.pth"), "--work-dir", test_dir,
                             "--eval", "bbox", "segm", "--show-dir", predictions, *data],
                 log, "det test (images)", regex_progress(r"Epoch\(test\)\s*\[\s*(\d+)/(\d+)\]"))
        metrics = latest_test_metrics(test_dir)
        bbox, segm = metrics["coco/bbox_mAP"], metrics["coco/segm_mAP"]
        say(log, f"det: bbox mAP {bbox:.3f}, segm mAP {segm:.3f} on {NUM_VAL} val images "
                 f"(untrained model: < 0.05); log {log.name}")
    return DemoResult(
        task="detection", model="ELSA-Swin nano Mask R-CNN", data=described, schedule=f"{epochs} epochs",
        seconds=time.time() - start, metric=f"bbox/segm mAP {bbox:.3f}/{segm:.3f}", chance="~0 (untrained < 0.05)",
        outputs=out_dir, values={"bbox_mAP": bbox, "segm_mAP": segm},
        pictures={"curves": os.path.join(work_dir, "curves.png"), "predictions": images_under(predictions)})
