"""A small synthetic COCO-format instance segmentation dataset, for demos and tests.

Layout (as COCO 2017): `{train2017,val2017}/*.png` and `annotations/instances_{train,val}2017.json` with
polygon masks. Every image is a plain background with 1..`max_objects` non-overlapping shapes; the class
fixes shape and colour (square = red, circle = green, triangle = blue), so the task is easy.
"""
import json
import math
import os

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("square", "circle", "triangle")
COLOURS = ((220, 40, 40), (40, 190, 60), (50, 70, 220))
SPLITS = {"train": "train2017", "val": "val2017"}


def shape_polygon(kind, cx, cy, radius):
    """Flat [x1, y1, x2, y2, ...] polygon of a shape centred at (cx, cy) with circumradius `radius`."""
    if kind == "square":
        angles = [math.pi / 4 + k * math.pi / 2 for k in range(4)]
    elif kind == "circle":
        angles = [k * 2 * math.pi / 24 for k in range(24)]
    elif kind == "triangle":
        angles = [-math.pi / 2 + k * 2 * math.pi / 3 for k in range(3)]
    else:
        raise ValueError(f"kind must be one of {CLASSES}, got {kind!r}")
    return [round(v, 2) for a in angles for v in (cx + radius * math.cos(a), cy + radius * math.sin(a))]


def polygon_area(poly):
    """Shoelace area of a flat polygon."""
    xs, ys = poly[0::2], poly[1::2]
    return abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs)))) / 2


def polygon_bbox(poly):
    """COCO [x, y, w, h] of a flat polygon."""
    xs, ys = poly[0::2], poly[1::2]
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def _place_objects(rng, size, max_objects, radius_range):
    """Up to `max_objects` (kind, cx, cy, r) with disjoint circumscribed discs inside the image."""
    height, width = size
    objects = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(50):
            r = float(rng.uniform(*radius_range))
            cx, cy = float(rng.uniform(r + 1, width - r - 1)), float(rng.uniform(r + 1, height - r - 1))
            if all(math.hypot(cx - x, cy - y) > r + q + 2 for _, x, y, q in objects):
                objects.append((CLASSES[int(rng.integers(len(CLASSES)))], cx, cy, r))
                break
    return objects


def _write_split(root, split, count, size, max_objects, radius_range, rng, first_id):
    folder = SPLITS[split]
    os.makedirs(os.path.join(root, folder), exist_ok=True)
    images, annotations = [], []
    for index in range(count):
        image_id = first_id + index
        background = tuple(int(v) for v in rng.integers(150, 256, 3))
        image = Image.new("RGB", (size[1], size[0]), background)
        draw = ImageDraw.Draw(image)
        for kind, cx, cy, r in _place_objects(rng, size, max_objects, radius_range):
            poly = shape_polygon(kind, cx, cy, r)
            draw.polygon(poly, fill=COLOURS[CLASSES.index(kind)])
            annotations.append(dict(id=len(annotations) + 1, image_id=image_id,
                                    category_id=CLASSES.index(kind) + 1, segmentation=[poly],
                                    area=polygon_area(poly), bbox=polygon_bbox(poly), iscrowd=0))
        file_name = f"{image_id:012d}.png"
        image.save(os.path.join(root, folder, file_name))
        images.append(dict(id=image_id, file_name=file_name, height=size[0], width=size[1]))
    categories = [dict(id=k + 1, name=name, supercategory="shape") for k, name in enumerate(CLASSES)]
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    with open(os.path.join(root, "annotations", f"instances_{folder}.json"), "w") as f:
        json.dump(dict(images=images, annotations=annotations, categories=categories), f)


def make_synthetic_coco(root, num_train=64, num_val=16, size=(128, 128), max_objects=3, radius_range=(14, 30),
                        seed=0):
    """Write the dataset under `root` (created) and return `root`.

    size: (H, W) of every image; max_objects: shapes per image (1..max_objects); radius_range: circumradius
    of the shapes in pixels (boxes of roughly 20..60 px on the default 128x128 images).
    """
    if len(size) != 2 or min(size) < 2 * radius_range[1] + 4:
        raise ValueError(f"size must be (H, W) with both > 2 * max radius + 4 = {2 * radius_range[1] + 4}, got {size}")
    if num_train < 1 or num_val < 1 or max_objects < 1:
        raise ValueError(f"num_train, num_val and max_objects must be >= 1, got {num_train}, {num_val}, {max_objects}")
    rng = np.random.default_rng(seed)
    _write_split(root, "train", num_train, size, max_objects, radius_range, rng, first_id=1)
    _write_split(root, "val", num_val, size, max_objects, radius_range, rng, first_id=num_train + 1)
    return root
