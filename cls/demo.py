"""`make demo`, classification part: synthetic ImageFolder -> train a small ELSA-Swin on CPU -> validate -> table.

Everything goes through the real tools (`localattn.cls.train.main`, `localattn.cls.validate.main`) with
the recipe `configs/cls/demo_elsa_swin_synthetic.yaml` (about two minutes on a laptop CPU).
"""
import json
import os

from .synthetic import make_image_folder
from .train import main as train_main
from .validate import main as validate_main

RECIPE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "cls",
                      "demo_elsa_swin_synthetic.yaml")


def main(out_dir="demo_output/cls"):
    """Run the demo under `out_dir` (dataset in `data/`, run in `runs/demo/`); returns the validation metrics."""
    if not os.path.isfile(RECIPE):
        raise FileNotFoundError(f"demo recipe not found: {RECIPE} (run from a source checkout of localattn)")
    data = os.path.join(out_dir, "data")
    classes = make_image_folder(data, num_classes=6, train_per_class=32, val_per_class=10, size=32, seed=0)
    print(f"synthetic dataset: {len(classes)} classes ({', '.join(classes)}), 32 train + 10 val images each, "
          f"32x32 px, in {data}", flush=True)
    run = os.path.join(out_dir, "runs")
    if train_main([RECIPE, data, "--output", run, "--experiment", "demo"]) != 0:
        raise RuntimeError("demo training failed (see the error above)")
    results_file = os.path.join(out_dir, "validation.json")
    if validate_main([data, "--checkpoint", os.path.join(run, "demo", "model_best.pth.tar"), "--device", "cpu",
                      "-j", "0", "--results-file", results_file]) != 0:
        raise RuntimeError("demo validation failed (see the error above)")
    with open(results_file) as f:
        metrics = json.load(f)
    print(f"cls demo: best checkpoint reaches top-1 {metrics['top1']:.1f}% on {metrics['images']} validation images "
          f"(chance {100 / len(classes):.1f}%)", flush=True)
    return metrics
