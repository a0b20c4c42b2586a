"""A small, learnable ImageFolder dataset of coloured shapes and textures (for the demo and the tests).

Each class is one (shape or texture, colour) pair drawn at a random position, size and rotation on a
noisy background, so a small network must look at colour and form; `make_image_folder` writes
`<root>/train/<class>/*.png` and `<root>/val/<class>/*.png` deterministically from `seed`.
"""
import math
import os

import numpy as np
from PIL import Image, ImageDraw

# (class name, pattern, RGB colour)
CLASSES = (
    ("red_disc", "disc", (220, 40, 40)),
    ("green_square", "square", (40, 200, 60)),
    ("blue_triangle", "triangle", (50, 80, 230)),
    ("yellow_stripes", "stripes", (230, 210, 40)),
    ("magenta_checker", "checker", (210, 50, 200)),
    ("cyan_ring", "ring", (40, 210, 220)),
    ("orange_cross", "cross", (240, 140, 30)),
    ("white_dots", "dots", (235, 235, 235)),
)


def _polygon(cx, cy, radius, sides, angle):
    return [(cx + radius * math.cos(angle + 2 * math.pi * i / sides),
             cy + radius * math.sin(angle + 2 * math.pi * i / sides)) for i in range(sides)]


def draw_sample(pattern, colour, size, rng):
    """One RGB image of `pattern` in (jittered) `colour` on a dark noisy background."""
    background = rng.integers(0, 70, size=(size, size, 3), dtype=np.uint8)
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    jitter = rng.integers(-25, 26, size=3)
    fill = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(colour, jitter))
    radius = rng.uniform(0.22, 0.38) * size
    cx, cy = rng.uniform(radius, size - radius, size=2)
    angle = rng.uniform(0, 2 * math.pi)
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    if pattern == "disc":
        draw.ellipse(box, fill=fill)
    elif pattern == "ring":
        draw.ellipse(box, outline=fill, width=max(2, size // 16))
    elif pattern == "square":
        draw.polygon(_polygon(cx, cy, radius, 4, angle), fill=fill)
    elif pattern == "triangle":
        draw.polygon(_polygon(cx, cy, radius, 3, angle), fill=fill)
    elif pattern == "cross":
        w = radius / 3
        draw.rectangle((cx - radius, cy - w, cx + radius, cy + w), fill=fill)
        draw.rectangle((cx - w, cy - radius, cx + w, cy + radius), fill=fill)
    elif pattern == "stripes":
        period = max(4, size // 8)
        for y in range(int(rng.integers(0, period)), size, period):
            draw.rectangle((0, y, size, y + period // 2 - 1), fill=fill)
    elif pattern == "checker":
        cell = max(4, size // 8)
        for y in range(0, size, cell):
            for x in range(0, size, cell):
                if (x // cell + y // cell) % 2 == 0:
                    draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=fill)
    elif pattern == "dots":
        for _ in range(12):
            dx, dy = rng.uniform(0, size, size=2)
            r = size / 20
            draw.ellipse((dx - r, dy - r, dx + r, dy + r), fill=fill)
    else:
        raise ValueError(f"unknown pattern {pattern!r}")
    return image


def make_image_folder(root, num_classes=4, train_per_class=24, val_per_class=8, size=32, seed=0):
    """Write the dataset under `root` (train/ and val/); returns the list of class names.

    Existing files with the same names are overwritten, so the result depends only on the arguments.
    """
    if not 2 <= num_classes <= len(CLASSES):
        raise ValueError(f"num_classes must be in [2, {len(CLASSES)}], got {num_classes}")
    rng = np.random.default_rng(seed)
    names = [name for name, _, _ in CLASSES[:num_classes]]
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for name, pattern, colour in CLASSES[:num_classes]:
            folder = os.path.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            for i in range(count):
                draw_sample(pattern, colour, size, rng).save(os.path.join(folder, f"{name}_{i:04d}.png"))
    return names
