"""`make demo`: the main job of each task on embedded synthetic data, end to end on CPU.

`tools/demo.py [--tasks cls det seg] [--out demo_output]`: each task generates its small dataset in the
real on-disk format, trains a small model with the real tools, evaluates it and prints its table.
"""
import argparse
import importlib
import sys
import time

TASKS = ("cls", "det", "seg")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--out", default="demo_output", help="folder for datasets, checkpoints and logs")
    args = parser.parse_args(argv)
    for task in args.tasks:
        start = time.time()
        print(f"\n===== localattn demo: {task} =====", flush=True)
        importlib.import_module(f"localattn.{task}.demo").main(out_dir=f"{args.out}/{task}")
        print(f"===== {task} demo done in {time.time() - start:.0f}s =====", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
