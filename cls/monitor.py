"""What users watch: progress bars with ETA, TensorBoard scalars, summary.csv, curves.png and results tables
(rank 0 only)."""
import csv
import logging
import os
import sys
import time

from tqdm import tqdm

logger = logging.getLogger("localattn.cls")


def setup_logging(is_main):
    """INFO log lines on rank 0, warnings only elsewhere."""
    logging.basicConfig(level=logging.INFO if is_main else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", stream=sys.stdout)


def progress(iterable, desc, enabled):
    """A tqdm bar (rate, elapsed, ETA) on stderr when `enabled`, else the plain iterable."""
    if not enabled:
        return iterable
    return tqdm(iterable, desc=desc, total=len(iterable), dynamic_ncols=True, mininterval=1.0, leave=False)


def format_duration(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def format_table(header, rows):
    """A plain-text table with right-aligned columns (floats with 4 decimals, small ones in scientific notation)."""
    def cell(v):
        if isinstance(v, float):
            return f"{v:.3e}" if 0 < abs(v) < 0.01 else f"{v:.4f}"
        return str(v)
    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    line = "+".join("-" * (w + 2) for w in widths)
    out = [" | ".join(str(h).rjust(w) for h, w in zip(header, widths)), line]
    out += [" | ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(out)


class SummaryCsv:
    """`summary.csv`: one row per finished epoch; rows of epochs that a resume replays are dropped first."""

    def __init__(self, path):
        self.path = path

    def rows(self):
        if not os.path.isfile(self.path):
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))

    def truncate_from(self, epoch):
        """Keep only rows of epochs < `epoch` (a run killed after logging but before checkpointing)."""
        kept = [r for r in self.rows() if int(r["epoch"]) < epoch]
        if kept or os.path.isfile(self.path):
            self._write(kept, list(kept[0]) if kept else None)

    def append(self, row):
        rows = self.rows() + [{k: str(v) for k, v in row.items()}]
        self._write(rows, list(row))

    def _write(self, rows, fields):
        tmp = self.path + ".tmp"
        with open(tmp, "w", newline="") as f:
            if fields:
                writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)
        os.replace(tmp, self.path)


def write_curves(rows, folder):
    """`<folder>/curves.png` from the `summary.csv` rows: losses, top-1/top-5 (and EMA) and lr per epoch."""
    from localattn.viz.curves import CURVES_FILE, plot_curves

    def series(*names):
        found = {n: [(int(r["epoch"]), float(r[n])) for r in rows if r.get(n) not in (None, "")] for n in names}
        return {n: tuple(zip(*points)) for n, points in found.items() if points}

    return plot_curves({"loss": series("train_loss", "val_loss"),
                        "validation accuracy (%)": series("top1", "top5", "ema_top1", "ema_top5"),
                        "learning rate": series("lr")},
                       os.path.join(folder, CURVES_FILE), f"training curves: {folder}", "epoch")


class Board:
    """TensorBoard scalars under `<run>/tensorboard` (no-op on ranks other than 0)."""

    def __init__(self, folder, enabled):
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(log_dir=os.path.join(folder, "tensorboard"))

    def scalars(self, step, flush=False, **values):
        """Add the non-None `values` at `step` (the writer also flushes by itself every two minutes)."""
        if self.writer is None:
            return
        for name, value in values.items():
            if value is not None:
                self.writer.add_scalar(name, value, step)
        if flush:
            self.writer.flush()

    def close(self):
        if self.writer is not None:
            self.writer.close()


class RunClock:
    """Wall time per epoch and an estimate of the time left for the whole run."""

    def __init__(self, first_epoch, num_epochs):
        self.start, self.first_epoch, self.num_epochs = time.time(), first_epoch, num_epochs

    def eta(self, finished_epoch):
        done = finished_epoch + 1 - self.first_epoch
        elapsed = time.time() - self.start
        return format_duration(elapsed), format_duration(elapsed / max(done, 1) * (self.num_epochs - finished_epoch - 1))
