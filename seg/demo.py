"""Segmentation part of `make demo`: synthetic ADE20K-layout data → train a nano ELSA-Swin UPerNet on CPU with
`tools/train.py` → evaluate with `tools/test.py … --aug-test --eval mIoU --show-dir` (6 scales × flip).

mmseg's per-class IoU/Acc table and everything else the tools print go to `<out_dir>/demo.log`.
"""
import contextlib
import os
import time

from localattn.demo import DemoResult, images_under, latest_test_metrics, regex_progress, run_tool, say

from .synthetic import make_synthetic_ade20k

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(REPO, "configs", "seg", "synthetic", "upernet_elsa_nano_synthetic.py")
NUM_CLASSES, NUM_TRAIN, NUM_VAL = 4, 48, 12  # the demo config's classes


def last_checkpoint(work_dir):
    """The checkpoint path mmengine recorded in `<work_dir>/last_checkpoint`."""
    with open(os.path.join(work_dir, "last_checkpoint")) as f:
        return f.read().strip()


def main(out_dir="demo_output/seg"):
    """Generate data, train, evaluate with 6-scale + flip TTA; returns a DemoResult."""
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    start = time.time()
    with open(os.path.join(out_dir, "demo.log"), "w") as log:
        with contextlib.redirect_stdout(log):
            data_root = make_synthetic_ade20k(os.path.join(out_dir, "data"), num_train=NUM_TRAIN, num_val=NUM_VAL,
                                              size=(64, 64), num_classes=NUM_CLASSES)
        described = f"synthetic ADE20K layout, {NUM_CLASSES} classes, {NUM_TRAIN} train / {NUM_VAL} val, 64px"
        say(log, f"data: {described} ({data_root})")
        train_dir, test_dir = os.path.join(out_dir, "train"), os.path.join(out_dir, "test_aug")
        predictions = os.path.join(out_dir, "predictions")
        data_option = ["--cfg-options", f"data_root={data_root}"]
        run_tool("train.py", [DEMO_CONFIG, "--work-dir", train_dir, "--seed", "0"] + data_option, log,
                 "seg train (iters)", regex_progress(r"Iter\(train\)\s*\[\s*(\d+)/(\d+)\]"))
        checkpoint = last_checkpoint(train_dir)
        iters = int(os.path.basename(checkpoint).split("_")[-1].split(".")[0])
        run_tool("test.py", [DEMO_CONFIG, checkpoint, "--aug-test", "--eval", "mIoU", "--work-dir", test_dir,
                             "--show-dir", predictions] + data_option,
                 log, "seg test (images, 12 passes each)", regex_progress(r"Iter\(test\)\s*\[\s*(\d+)/(\d+)\]"))
        miou = latest_test_metrics(test_dir)["mIoU"]
        chance = 100 / (2 * NUM_CLASSES - 1)
        say(log, f"seg: mIoU {miou:.2f} on {NUM_VAL} val images, 6 scales x flip (uniform guess: {chance:.1f}); "
                 f"log {log.name}")
    return DemoResult(
        task="segmentation", model="ELSA-Swin nano UPerNet", data=described, schedule=f"{iters} iters",
        seconds=time.time() - start, metric=f"mIoU {miou:.2f} (TTA)", chance=f"{chance:.1f}", outputs=out_dir,
        values={"mIoU": miou},
        pictures={"curves": os.path.join(train_dir, "curves.png"), "predictions": images_under(predictions)})
