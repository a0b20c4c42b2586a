"""Pictures assembled from pictures: a titled grid of image files, and PNGs stacked vertically."""
import numpy as np
from PIL import Image


def image_grid(rows, path, title, columns=3):
    """`rows` = {row title: [image paths]} -> one PNG with up to `columns` images per row."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.6 * columns, 2.4 * len(rows) + 0.5), dpi=100)
    axes = fig.subplots(len(rows), columns, squeeze=False)
    for r, (name, paths) in enumerate(rows.items()):
        for c in range(columns):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(paths):
                ax.imshow(np.asarray(Image.open(paths[c]).convert("RGB")))
                ax.set_title(f"{name} {c + 1}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def stack_vertically(paths, path):
    """The PNGs `paths` one below the other (left-aligned, white background) as one PNG at `path`."""
    images = [Image.open(p).convert("RGB") for p in paths]
    canvas = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images)), "white")
    top = 0
    for image in images:
        canvas.paste(image, (0, top))
        top += image.height
    canvas.save(path)
    return path
