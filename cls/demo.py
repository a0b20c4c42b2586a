"""`make demo`, classification part: synthetic ImageFolder -> train a small ELSA-Swin on CPU -> validate ->
its attention on a real photograph.

Everything goes through the real tools (`tools/train.py`, `tools/validate.py`,
`tools/analysis/visualize_attention.py`) with the recipe `configs/cls/demo_elsa_swin_synthetic.yaml`;
their whole output goes to `<out_dir>/demo.log`.
"""
import contextlib
import json
import os
import re
import time

import yaml

from localattn.demo import DemoResult, run_tool, say

from .synthetic import make_image_folder

RECIPE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "cls",
                      "demo_elsa_swin_synthetic.yaml")
CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS, SIZE = 6, 32, 10, 32
ATTENTION_IMAGE, ATTENTION_SIZE = "chelsea", 128
EPOCH_LINE = re.compile(r"epoch (\d+)/(\d+) .*ETA")


def epoch_progress(line):
    """`run_tool` progress from the trainer's `epoch E/LAST ... [elapsed, ETA]` lines (E counts from 0)."""
    match = EPOCH_LINE.search(line)
    return match and (int(match.group(1)) + 1, int(match.group(2)) + 1)


def main(out_dir="demo_output/cls"):
    """Run the demo under `out_dir` (dataset in `data/`, run in `runs/demo/`); returns a DemoResult."""
    if not os.path.isfile(RECIPE):
        raise FileNotFoundError(f"demo recipe not found: {RECIPE} (run from a source checkout of localattn)")
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    start = time.time()
    with open(RECIPE) as f:
        recipe = yaml.safe_load(f)
    with open(os.path.join(out_dir, "demo.log"), "w") as log:
        data = os.path.join(out_dir, "data")
        with contextlib.redirect_stdout(log):
            classes = make_image_folder(data, num_classes=CLASSES, train_per_class=TRAIN_PER_CLASS,
                                        val_per_class=VAL_PER_CLASS, size=SIZE, seed=0)
        described = (f"synthetic shapes, {len(classes)} classes, {TRAIN_PER_CLASS * len(classes)} train / "
                     f"{VAL_PER_CLASS * len(classes)} val, {SIZE}px")
        say(log, f"data: {described} ({data})")
        run = os.path.join(out_dir, "runs", "demo")
        run_tool("train.py", [RECIPE, data, "--output", os.path.dirname(run), "--experiment", "demo", "--no-progress"],
                 log, "cls train (epochs)", epoch_progress)
        results_file = os.path.join(out_dir, "validation.json")
        best = os.path.join(run, "model_best.pth.tar")
        run_tool("validate.py", [data, "--checkpoint", best, "--device", "cpu", "-j", "0", "--no-progress",
                                 "--results-file", results_file], log)
        with open(results_file) as f:
            metrics = json.load(f)
        attention = os.path.join(out_dir, "attention")
        run_tool("analysis/visualize_attention.py", [recipe["model"], ATTENTION_IMAGE, "--checkpoint", best,
                                                      "--img-size", ATTENTION_SIZE, "--out", attention], log)
        chance = 100 / len(classes)
        say(log, f"cls: top-1 {metrics['top1']:.1f}% on {metrics['images']} val images (chance {chance:.1f}%); "
                 f"log {log.name}")
    layer = sorted(p for p in os.listdir(attention) if p != "erf.png")[0]
    return DemoResult(
        task="classification", model=f"ELSA-Swin nano ({recipe['model']} widths {recipe['model_kwargs']['embed_dim']})",
        data=described, schedule=f"{recipe['epochs']} epochs", seconds=time.time() - start,
        metric=f"top-1 {metrics['top1']:.2f}%", chance=f"{chance:.1f}%", outputs=out_dir,
        values={"top1": metrics["top1"]},
        pictures={"curves": os.path.join(run, "curves.png"),
                  f"attention on {ATTENTION_IMAGE} ({layer})": os.path.join(attention, layer),
                  "receptive field": os.path.join(attention, "erf.png")})
