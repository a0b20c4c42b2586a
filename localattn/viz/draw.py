"""Figures of captured attention maps and receptive fields (matplotlib `Figure` objects, Agg canvas).

Each `*_figure` returns `(figure, drawn)`: `drawn` maps a key such as `("attn", point, head)` to the exact
array handed to `imshow`, so tests can compare what is drawn with the tensors the forward used.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

DPI = 100
PANEL = 1.8  # inches per panel
MAX_GROUPS = 16  # heads / weight channels drawn per layer (SAN's deep stages have 64-256 weight channels)


def new_figure(columns, rows, extra_height=0.7):
    """A Figure of `columns × rows` panels of PANEL inches (plus room for the title) on the Agg canvas."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(PANEL * columns, PANEL * rows + extra_height), dpi=DPI)
    return fig, fig.subplots(rows, columns, squeeze=False)


def save_figure(fig, path):
    """Write `fig` as PNG at DPI (pixel size = figsize · DPI)."""
    fig.savefig(path, dpi=DPI, format="png")


def resize_image(image, size):
    """`(H, W, 3)` array -> `(h, w, 3)` by area averaging (the image at a layer's resolution)."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
    return F.interpolate(tensor, size=tuple(size), mode="area")[0].permute(1, 2, 0).numpy()


def spread_points(count, width, height):
    """`count` query pixels `(x, y)` spread over the image: the centres of a near-square grid of cells."""
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    cells = [(c, r) for r in range(rows) for c in range(columns)][:count]
    return [(int((c + 0.5) * width / columns), int((r + 0.5) * height / rows)) for c, r in cells]


def to_grid(point, image_size, grid_size):
    """Image pixel `(x, y)` -> `(row, col)` on a `grid_size=(h, w)` map covering an `image_size=(H, W)` image."""
    (x, y), (height, width), (h, w) = point, image_size, grid_size
    return min(int(y * h / height), h - 1), min(int(x * w / width), w - 1)


def mosaic(tiles, columns=None, gap=1):
    """`(n, k, k)` tiles -> one 2-D array with `gap` NaN pixels between them (row-major, near-square)."""
    n, kh, kw = tiles.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    out = np.full((rows * (kh + gap) - gap, columns * (kw + gap) - gap), np.nan, dtype=np.float64)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        out[r * (kh + gap):r * (kh + gap) + kh, c * (kw + gap):c * (kw + gap) + kw] = tile
    return out


def window_canvas(weights, centre, kernel_size, dilation, stride, size):
    """The K×K `weights` placed at their taps around output pixel `centre` on the `size` input map (NaN elsewhere;
    taps that fall into the padding are dropped)."""
    canvas = np.full(tuple(size), np.nan)
    radius = kernel_size // 2
    y0, x0 = centre[0] * stride, centre[1] * stride
    for i in range(kernel_size):
        for j in range(kernel_size):
            y, x = y0 + (i - radius) * dilation, x0 + (j - radius) * dilation
            if 0 <= y < size[0] and 0 <= x < size[1]:
                canvas[y, x] = weights[i, j]
    return canvas


def _show(ax, array, title, cmap="viridis"):
    ax.imshow(array, cmap=cmap, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def local_figure(maps, image, points, model_name, batch=0):
    """One row per query point: the image at the layer's input resolution with the group-mean K×K window
    overlaid, then the K×K map of every head / weight channel (the first MAX_GROUPS); ELSA adds a row with each head's effective
    per-channel filters (ghost_mul · attn + ghost_add, one tile per channel)."""
    weights = maps.weights[batch].double().cpu()  # (G, K², h, w)
    k, out_size = maps.kernel_size, tuple(weights.shape[-2:])
    groups = min(weights.shape[0], MAX_GROUPS)
    shown = f"{weights.shape[0]} {maps.group}s" + (f", first {groups} drawn" if groups < weights.shape[0] else "")
    rows_per_point = 2 if maps.ghost is not None else 1
    fig, axes = new_figure(1 + groups, rows_per_point * len(points))
    fig.suptitle(f"{model_name} / {maps.name}\n{maps.kind}, {shown}, K={k}, {out_size[0]}x{out_size[1]}",
                 fontsize=9)
    small = resize_image(image, maps.in_size)
    drawn = {}
    for p, point in enumerate(points):
        y, x = to_grid(point, image.shape[:2], out_size)
        row = axes[p * rows_per_point]
        window = weights[:, :, y, x].reshape(-1, k, k).numpy()
        canvas = window_canvas(window.mean(0), (y, x), k, maps.dilation, maps.stride, maps.in_size)
        drawn[("overlay", p)] = canvas
        row[0].imshow(small, interpolation="nearest")
        row[0].imshow(np.ma.masked_invalid(canvas), cmap="magma", alpha=0.8, interpolation="nearest")
        row[0].plot([x * maps.stride], [y * maps.stride], marker="+", color="cyan", markersize=6)
        row[0].set_title(f"query x,y={point[0]},{point[1]}\n(map {x},{y}), mean over {maps.group}s", fontsize=7)
        row[0].set_xticks([])
        row[0].set_yticks([])
        for g in range(groups):
            drawn[("attn", p, g)] = window[g]
            _show(row[1 + g], window[g], f"{maps.group} {g}: max {window[g].max():.2f}")
        if maps.ghost is not None:
            filters = maps.effective_filter(batch, y, x).double().cpu().numpy()  # (G, C/G, K, K)
            below = axes[p * rows_per_point + 1]
            below[0].axis("off")
            below[0].text(0.5, 0.5, "effective filter\nper channel:\nghost_mul·attn\n+ ghost_add", ha="center",
                          va="center", fontsize=8, transform=below[0].transAxes)
            for g in range(groups):
                drawn[("filter", p, g)] = filters[g]
                _show(below[1 + g], mosaic(filters[g]), f"head {g}: {filters.shape[1]} channels", cmap="coolwarm")
    return fig, drawn


def global_figure(maps, image, points, model_name, batch=0):
    """One row per query point: its N-pixel map over the image at the layer's resolution, and alone."""
    h, w = maps.size
    weights = maps.weights[batch].double().cpu()  # (N keys, N queries)
    fig, axes = new_figure(2, len(points))
    fig.suptitle(f"{model_name} / {maps.name}\n{maps.kind}, {h}x{w} = {h * w} pixels", fontsize=9)
    small = resize_image(image, (h, w))
    drawn = {}
    for p, point in enumerate(points):
        y, x = to_grid(point, image.shape[:2], (h, w))
        attention = weights[:, y * w + x].reshape(h, w).numpy()
        drawn[("attn", p)] = attention
        axes[p][0].imshow(small, interpolation="nearest")
        axes[p][0].imshow(attention, cmap="magma", alpha=0.7, interpolation="nearest")
        axes[p][0].plot([x], [y], marker="+", color="cyan", markersize=6)
        axes[p][0].set_title(f"query x,y={point[0]},{point[1]} (map {x},{y})", fontsize=7)
        axes[p][0].set_xticks([])
        axes[p][0].set_yticks([])
        _show(axes[p][1], attention, f"weights: min {attention.min():.2g}, max {attention.max():.2g}")
    return fig, drawn


def erf_figure(fields, image):
    """Receptive fields side by side: `fields` = [(model name, erf (H, W), (y, x), (h, w))]; top row over the
    image, bottom row alone (square root, to show the tails)."""
    fig, axes = new_figure(len(fields), 2)
    fig.suptitle("effective receptive field\n|d sum_c f[c,y,x] / d input|", fontsize=9)
    drawn = {}
    for i, (name, erf, (y, x), (h, w)) in enumerate(fields):
        erf = erf.double().cpu().numpy()
        drawn[("erf", i)] = erf
        scaled = erf / erf.max() if erf.max() > 0 else erf
        axes[0][i].imshow(image, interpolation="nearest")
        axes[0][i].imshow(scaled, cmap="magma", alpha=np.clip(scaled * 2, 0, 1), interpolation="nearest")
        axes[0][i].set_title(f"{name}\noutput ({x},{y}) of {h}x{w}", fontsize=7)
        axes[0][i].set_xticks([])
        axes[0][i].set_yticks([])
        _show(axes[1][i], np.sqrt(scaled), "sqrt(ERF / max)", cmap="magma")
    return fig, drawn
