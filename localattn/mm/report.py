"""The final metrics table printed at the end of every train / test run of the shared tools."""
from mmengine.dist import master_only
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


def format_metrics_table(metrics, title):
    """A two-column text table of `metrics` (name -> number or string)."""
    rows = [(str(name), f"{value:.4f}" if isinstance(value, float) else str(value)) for name, value in metrics.items()]
    width = max([len("metric")] + [len(name) for name, _ in rows])
    lines = [title, f"{'metric':<{width}}  value", f"{'-' * width}  -----"]
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    return "\n".join(lines)


@HOOKS.register_module(name="LocalattnMetricsTableHook")
class MetricsTableHook(Hook):
    """Remembers the last validation / test metrics and prints them as a table when the run ends."""

    priority = "LOWEST"

    def __init__(self):
        self.metrics, self.title = None, None

    def after_val_epoch(self, runner, metrics=None):
        if metrics:
            self.metrics, self.title = dict(metrics), f"final validation metrics (epoch {runner.epoch}, iter {runner.iter})"

    def after_test_epoch(self, runner, metrics=None):
        if metrics:
            self.metrics, self.title = dict(metrics), f"test metrics ({runner.cfg.get('load_from')})"

    @master_only
    def after_run(self, runner):
        if self.metrics:
            print("\n" + format_metrics_table(self.metrics, self.title), flush=True)


def add_metrics_table_hook(cfg):
    """Append the table hook to `cfg.custom_hooks` (once)."""
    hooks = list(cfg.get("custom_hooks") or [])
    if not any(h.get("type") == "LocalattnMetricsTableHook" for h in hooks):
        cfg.custom_hooks = hooks + [dict(type="LocalattnMetricsTableHook")]
