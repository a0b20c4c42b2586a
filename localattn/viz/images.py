"""Real photographs to look at: the colour sample images bundled inside the scikit-image wheel (never downloaded)."""
import os

import numpy as np
from PIL import Image

# skimage.data samples that ship as files inside the wheel (the others are fetched on demand: not used)
SAMPLES = {"astronaut": "astronaut.png", "chelsea": "chelsea.png", "coffee": "coffee.png", "rocket": "rocket.jpg",
           "motorcycle": "motorcycle_left.png"}


def sample_path(name):
    """Path of the bundled sample `name` (one of SAMPLES) inside the installed scikit-image."""
    import skimage.data

    if name not in SAMPLES:
        raise KeyError(f"unknown sample image {name!r}; bundled: {sorted(SAMPLES)}")
    path = os.path.join(os.path.dirname(skimage.data.__file__), SAMPLES[name])
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing: this scikit-image does not bundle the {name!r} sample")
    return path


def resolve_image(spec):
    """An image file path, or the name of a bundled sample (SAMPLES); raises FileNotFoundError otherwise."""
    if os.path.isfile(spec):
        return spec
    if spec in SAMPLES:
        return sample_path(spec)
    raise FileNotFoundError(f"IMAGE {spec!r} is neither an image file nor a bundled sample ({', '.join(sorted(SAMPLES))})")


def load_rgb(spec, size):
    """`(size, size, 3)` float32 RGB in [0, 1]: the image centre-cropped to a square and resized (bicubic)."""
    image = Image.open(resolve_image(spec)).convert("RGB")
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
    return np.asarray(image, dtype=np.float32) / 255.0
