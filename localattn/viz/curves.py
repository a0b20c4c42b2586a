"""`curves.png` of a run folder: loss and metrics per epoch / iteration, one panel each (cls trainer, mm hook)."""
import os

CURVES_FILE = "curves.png"


def plot_curves(panels, path, title, xlabel):
    """Write `panels` = {panel title: {series label: (xs, ys)}} as one row of line plots to `path` (PNG,
    replaced atomically so a reader never sees half a file); returns the Figure. Empty series are left out."""
    from matplotlib.figure import Figure

    panels = {name: {label: xy for label, xy in series.items() if len(xy[0])} for name, series in panels.items()}
    panels = {name: series for name, series in panels.items() if series}
    fig = Figure(figsize=(4.2 * max(len(panels), 1), 3.4), dpi=100)
    axes = fig.subplots(1, max(len(panels), 1), squeeze=False)[0]
    for ax, (name, series) in zip(axes, panels.items()):
        for label, (xs, ys) in series.items():
            ax.plot(xs, ys, marker="o" if len(xs) <= 30 else None, markersize=3, linewidth=1.2, label=label)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    tmp = f"{path}.tmp{os.getpid()}"
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return fig
