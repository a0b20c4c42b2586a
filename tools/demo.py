"""`make demo`: the main job of each task on embedded synthetic data, end to end on CPU, with the real tools.

`tools/demo.py [--tasks cls det seg] [--out demo_output]`: each task generates its small dataset in the
real on-disk format, trains a small ELSA-Swin model, evaluates it; the terminal shows a progress bar and a
few lines per task (the tools' whole output is in `<out>/<task>/demo.log`), then one table across the tasks
(also `<out>/summary.txt`, numbers in `<out>/summary.json`) and the pictures written next to it:
`curves.png` (training curves of the three runs), `predictions.png` (detection and segmentation on the
validation images: ground truth | prediction), `attention.png` (the classification model's ELSA attention
on a real photograph).
"""
import argparse
import dataclasses
import importlib
import json
import os
import shutil
import sys
import time

TASKS = ("cls", "det", "seg")
HEADER = ("task", "model", "data", "schedule", "time", "metric", "chance", "outputs")


def table(results):
    """The final table as text (one row per task)."""
    rows = [(r.task, r.model, r.data, r.schedule, f"{r.seconds:.0f}s", r.metric, r.chance, r.outputs) for r in results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(HEADER)]
    line = lambda cells: " | ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(HEADER), "-+-".join("-" * w for w in widths)] + [line(row) for row in rows])


def write_pictures(results, out):
    """curves.png, predictions.png and attention.png in `out`, from what the tasks wrote; returns their paths."""
    from localattn.viz.grid import image_grid, stack_vertically

    written = {}
    curves = [r.pictures["curves"] for r in results if os.path.isfile(r.pictures.get("curves", ""))]
    if curves:
        written["training curves"] = stack_vertically(curves, os.path.join(out, "curves.png"))
    grids = {r.task: r.pictures["predictions"] for r in results if r.pictures.get("predictions")}
    if grids:
        written["predictions"] = image_grid(grids, os.path.join(out, "predictions.png"),
                                            "validation images: ground truth | prediction")
    for result in results:
        for title, path in result.pictures.items():
            if title.startswith("attention"):
                written[title] = shutil.copyfile(path, os.path.join(out, "attention.png"))
            elif title == "receptive field":
                written[title] = path
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--out", default="demo_output", help="folder for datasets, runs, logs and pictures")
    args = parser.parse_args(argv)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    results, start = [], time.time()
    for i, task in enumerate(args.tasks):
        print(f"\n[{i + 1}/{len(args.tasks)}] localattn demo: {task}", flush=True)
        results.append(importlib.import_module(f"localattn.{task}.demo").main(out_dir=os.path.join(out, task)))
    text = table(results)
    with open(os.path.join(out, "summary.txt"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump([dataclasses.asdict(r) for r in results], f, indent=1)
    pictures = write_pictures(results, out)
    print(f"\nlocalattn demo: {len(results)} task(s) in {time.time() - start:.0f}s\n{text}\n\npictures:", flush=True)
    for title, path in pictures.items():
        print(f"  {title}: {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
