"""What the three parts of `make demo` share: running a real tool with its whole output in the task's log
file and a progress bar on the terminal, the metrics mmengine's test wrote, and the result record of the
final table.

Every tool runs with a fixed thread count (`DEMO_THREADS`): the reductions of oneDNN / MKL / our kernels
depend on how work is split over threads, so the same seed gives the same numbers only at the same count.
"""
import glob
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field

from tqdm import tqdm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_THREADS = "2"


@dataclass
class DemoResult:
    """One row of the final table, plus the pictures the task wrote (`{title: path}`)."""
    task: str
    model: str
    data: str
    schedule: str
    seconds: float
    metric: str
    chance: str
    outputs: str
    values: dict = field(default_factory=dict)
    pictures: dict = field(default_factory=dict)


def say(log, message):
    """A line for the terminal that is also kept in the log."""
    print(message, flush=True)
    log.write(message + "\n")
    log.flush()


def run_tool(tool, args, log, desc=None, progress=None):
    """Run `tools/<tool>` with this interpreter, its stdout and stderr going to the open file `log`.

    `progress(line)` -> `(done, total)` or None drives a tqdm bar labelled `desc` on the terminal.
    On failure the last lines of the log are shown and RuntimeError names the log file.
    """
    command = [sys.executable, os.path.join(REPO, "tools", tool)] + [str(a) for a in args]
    log.write("$ " + " ".join(command) + "\n")
    log.flush()
    env = {**os.environ, "OMP_NUM_THREADS": DEMO_THREADS, "MKL_NUM_THREADS": DEMO_THREADS, "PYTHONUNBUFFERED": "1"}
    bar = tqdm(desc=desc, total=1, unit="step", dynamic_ncols=True, leave=True) if desc else None
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=env)
    tail = []
    for line in process.stdout:
        log.write(line)
        tail = (tail + [line])[-25:]
        state = progress(line) if progress and bar is not None else None
        if state:
            bar.total = state[1]
            bar.n = min(state[0], state[1])
            bar.refresh()
    code = process.wait()
    log.flush()
    if bar is not None:
        if code == 0:
            bar.n = bar.total
        bar.close()
    if code:
        sys.stdout.write("".join(tail))
        raise RuntimeError(f"tools/{tool} failed with exit code {code}; full log: {log.name}")


def regex_progress(pattern):
    """A `progress` for `run_tool` from a regex whose first two groups are (done, total)."""
    compiled = re.compile(pattern)

    def parse(line):
        match = compiled.search(line)
        return match and tuple(int(g) for g in match.groups()[:2])
    return parse


def latest_test_metrics(work_dir):
    """The metrics mmengine's Runner.test wrote to `<work_dir>/<timestamp>/<timestamp>.json`."""
    found = sorted(glob.glob(os.path.join(work_dir, "*", "*.json")))
    if not found:
        raise FileNotFoundError(f"no test metrics json under {work_dir}")
    with open(found[-1]) as f:
        return json.load(f)


def images_under(folder):
    """Image files below `folder`, sorted by name."""
    return sorted(p for p in glob.glob(os.path.join(folder, "**", "*"), recursive=True)
                  if p.lower().endswith((".png", ".jpg", ".jpeg")))
