"""A small synthetic dataset in the ADE20K on-disk layout, for demos and tests.

Layout (as `ADEChallengeData2016`): `images/{training,validation}/*.jpg` and
`annotations/{training,validation}/*.png` with the same stems. Label value 0 means "other" (ignored after
`reduce_zero_label`), values 1..K are the K classes. Every class has its own hue, so the task is easy:
each image is a background region of one class with a few rectangles and ellipses of other classes,
plus pixel noise and a thin unlabelled (0) frame.
"""
import colorsys
import os

import numpy as np
from PIL import Image, ImageDraw

SPLITS = ("training", "validation")


def class_colours(num_classes):
    """RGB uint8 colour of each class (1..K → row 0..K-1): hues evenly spread, full saturation."""
    return np.array([[round(255 * c) for c in colorsys.hsv_to_rgb(k / num_classes, 0.9, 0.9)]
                     for k in range(num_classes)], dtype=np.uint8)


def _draw_label_map(rng, size, num_classes):
    """uint8 (H, W) label map with values 1..K (and 0 on a 1-pixel frame)."""
    height, width = size
    labels = Image.new("L", (width, height), int(rng.integers(1, num_classes + 1)))
    draw = ImageDraw.Draw(labels)
    for _ in range(int(rng.integers(2, 5))):
        x0, x1 = sorted(rng.integers(0, width, 2))
        y0, y1 = sorted(rng.integers(0, height, 2))
        box = (int(x0), int(y0), int(max(x1, x0 + width // 6)), int(max(y1, y0 + height // 6)))
        shape = draw.rectangle if rng.random() < 0.5 else draw.ellipse
        shape(box, fill=int(rng.integers(1, num_classes + 1)))
    label_map = np.array(labels, dtype=np.uint8)
    label_map[[0, -1], :] = 0
    label_map[:, [0, -1]] = 0
    return label_map


def _render_image(rng, label_map, colours, noise):
    """RGB image: the class colour of each pixel (grey for label 0) plus Gaussian noise."""
    palette = np.concatenate([np.full((1, 3), 128, np.uint8), colours])
    image = palette[label_map].astype(np.float32) + rng.normal(0, noise, label_map.shape + (3,))
    return np.clip(image, 0, 255).astype(np.uint8)


def make_synthetic_ade20k(root, num_train=32, num_val=8, size=(64, 64), num_classes=4, noise=12.0, seed=0):
    """Write the dataset under `root` (created) and return `root`.

    size: (H, W) of every image; num_classes: K ≤ 150 labelled classes (the first K ADE20K names are used
    as class names by the synthetic configs).
    """
    if not 1 <= num_classes <= 150:
        raise ValueError(f"num_classes must be in 1..150 (ADE20K label range), got {num_classes}")
    if len(size) != 2 or min(size) < 8:
        raise ValueError(f"size must be (H, W) with both ≥ 8 pixels, got {size}")
    rng = np.random.default_rng(seed)
    colours = class_colours(num_classes)
    for split, count in zip(SPLITS, (num_train, num_val)):
        img_dir = os.path.join(root, "images", split)
        ann_dir = os.path.join(root, "annotations", split)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        for index in range(count):
            stem = f"ADE_{'train' if split == 'training' else 'val'}_{index:08d}"
            label_map = _draw_label_map(rng, size, num_classes)
            image = _render_image(rng, label_map, colours, noise)
            Image.fromarray(image).save(os.path.join(img_dir, stem + ".jpg"), quality=95, subsampling=0)
            Image.fromarray(label_map).save(os.path.join(ann_dir, stem + ".png"))
    return root
