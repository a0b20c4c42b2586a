"""Detection part of `make demo`: synthetic COCO data -> `tools/train.py` -> `tools/test.py --eval bbox segm`.

A small ELSA-Swin Mask R-CNN (configs/det/synthetic/mask_elsa_synthetic.py) is trained from scratch on CPU
for a few minutes with the real tools; the COCO bbox/segm tables are printed by the evaluation.
"""
import os
import subprocess
import sys

from .synthetic import make_synthetic_coco

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "det", "synthetic", "mask_elsa_synthetic.py")


def run_tool(tool, *args, cwd=REPO):
    """Run `tools/<tool>` with this interpreter, streaming its output; raise if it fails."""
    command = [sys.executable, os.path.join(REPO, "tools", tool), *args]
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, cwd=cwd, check=True)


def main(out_dir="demo_output/det", epochs=8):
    """Generate the data under `out_dir`/data, train `epochs` epochs into `out_dir`/work, evaluate."""
    if not os.path.isfile(CONFIG):
        raise FileNotFoundError(f"demo config not found: {CONFIG} (run the demo from a source checkout)")
    out_dir = os.path.abspath(out_dir)
    data_root = make_synthetic_coco(os.path.join(out_dir, "data"), num_train=48, num_val=16)
    work_dir = os.path.join(out_dir, "work")
    common = ["--work-dir", work_dir, "--cfg-options", f"data_root={data_root}"]
    run_tool("train.py", CONFIG, *common, f"train_cfg.max_epochs={epochs}", "--seed", "0")
    run_tool("test.py", CONFIG, os.path.join(work_dir, f"epoch_{epochs}.pth"), *common, "--eval", "bbox", "segm")
