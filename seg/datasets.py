"""ADE20K-layout data with clear errors: missing folders/files and label maps that don't fit their image.

`CheckedADE20KDataset` is mmseg's `ADE20KDataset` (`images/<split>/*.jpg` ↔ `annotations/<split>/*.png`,
`reduce_zero_label=True`) that checks the folders and the image ↔ annotation pairing when it is built
(`check_ade20k_layout`, also run by the tools before training/testing starts) and leaves out the images
of `skip_files` (the data check's 'skip' policy); `check_ade20k_files` (run by the tools up front, cached
by file stats) reads every label map and image header: single channel, the image's size, label values
within the classes; `CheckSegMapSize` (placed right after `LoadAnnotations`) checks each label map
against its image once more while loading.
"""
import os

import numpy as np
from mmcv.transforms import BaseTransform
from PIL import Image
from mmseg.datasets import ADE20KDataset
from mmseg.registry import DATASETS, TRANSFORMS

from localattn.datacheck import apply_policy, file_facts

_SHOWN = 5  # how many offending files an error lists


def _images(img_dir, img_suffix):
    """Image paths relative to `img_dir` (recursive), sorted."""
    found = []
    for folder, _, names in os.walk(img_dir):
        found += [os.path.relpath(os.path.join(folder, n), img_dir) for n in names if n.endswith(img_suffix)]
    return sorted(found)


def check_ade20k_layout(img_dir, ann_dir, img_suffix=".jpg", seg_map_suffix=".png", data_root=None):
    """Raise FileNotFoundError naming the folder/files if `img_dir` is missing or empty, or if an image
    has no `ann_dir/<stem><seg_map_suffix>` (ann_dir None = images only)."""
    for what, folder in (("image", img_dir), ("annotation", ann_dir)):
        if folder is not None and not os.path.isdir(folder):
            raise FileNotFoundError(f"ADE20K {what} folder not found: {folder!r} (expected the ADEChallengeData2016 "
                                    f"layout images|annotations/{{training,validation}} under data_root={data_root!r})")
    images = _images(img_dir, img_suffix)
    if not images:
        raise FileNotFoundError(f"no '*{img_suffix}' images in {img_dir!r}")
    if ann_dir is None:
        return
    missing = [os.path.join(ann_dir, name[:-len(img_suffix)] + seg_map_suffix) for name in images]
    missing = [path for path in missing if not os.path.isfile(path)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(images)} images in {img_dir!r} have no annotation file, "
                                f"e.g. " + ", ".join(repr(path) for path in missing[:_SHOWN]))


def _label_facts(path):
    """[width, height, mode, sorted label values] of a label map, or why it does not decode."""
    try:
        with Image.open(path) as label:
            label.load()
            return [*label.size, label.mode, np.unique(np.asarray(label)).tolist() if label.mode in _LABEL_MODES
                    else []]
    except (OSError, ValueError, SyntaxError) as err:
        return f"cannot be read as a label map: {err}"


def _image_facts(path):
    """[width, height] of a fully decoded image, or why it does not decode."""
    try:
        with Image.open(path) as image:
            image.load()
            return list(image.size)
    except (OSError, ValueError, SyntaxError) as err:
        return f"cannot be read as an image: {err}"


_LABEL_MODES = ("L", "P", "I;16", "I")


def label_problem(label, image, num_classes, reduce_zero_label, ignore_index=255):
    """Why a label map's facts (`_label_facts`) do not fit its image's (`_image_facts`) and the classes."""
    if isinstance(label, str):
        return label
    width, height, mode, values = label
    if mode not in _LABEL_MODES:
        return f"label map is mode {mode}; expected a single-channel map of class indices (L or P)"
    if not isinstance(image, str) and [width, height] != image:
        return f"label map is {width}x{height} but its image is {image[0]}x{image[1]}"
    valid = range(0, num_classes + 1) if reduce_zero_label else range(0, num_classes)
    bad = [v for v in values if v not in valid and v != ignore_index]
    if bad:
        allowed = f"0..{num_classes}" + (" (0 = ignored, k = class k-1: reduce_zero_label)" if reduce_zero_label else "")
        return f"label values {bad[:10]} are outside {allowed} and the ignore index {ignore_index} " \
               f"for num_classes={num_classes}"
    return None


def check_ade20k_files(img_dir, ann_dir, num_classes, reduce_zero_label, policy, img_suffix=".jpg",
                       seg_map_suffix=".png", ignore_index=255, show_progress=True):
    """Read every image and label map of a split (cached by file stats) and apply `policy` to the problems;
    returns the image paths to leave out (policy 'skip')."""
    images = [os.path.join(img_dir, name) for name in _images(img_dir, img_suffix)]
    labels = {path: os.path.join(ann_dir, os.path.relpath(path, img_dir)[:-len(img_suffix)] + seg_map_suffix)
              for path in images}
    image_facts = file_facts(images, _image_facts, "ade20k-image-v1", img_dir, f"checking images in {img_dir}",
                             show_progress=show_progress)
    label_facts = file_facts(list(labels.values()), _label_facts, "ade20k-label-v1", ann_dir,
                             f"checking label maps in {ann_dir}", show_progress=show_progress)
    problems, pairs = {}, {}
    for path, label_path in labels.items():
        if isinstance(image_facts[path], str):
            problems[path] = image_facts[path]
        elif (problem := label_problem(label_facts[label_path], image_facts[path], num_classes, reduce_zero_label,
                                       ignore_index)) is not None:
            problems[label_path] = problem
        pairs[path] = pairs[label_path] = path
    return {pairs[where] for where in apply_policy(problems, policy, "ADE20K data check")}


@DATASETS.register_module()
class CheckedADE20KDataset(ADE20KDataset):
    """ADE20KDataset that fails at construction, naming the path, when the layout is broken; the images in
    `skip_files` (and their label maps) are left out."""

    def __init__(self, *args, skip_files=(), **kwargs):
        self.skip_files = set(skip_files)
        super().__init__(*args, **kwargs)

    def load_data_list(self):
        check_ade20k_layout(self.data_prefix.get("img_path"), self.data_prefix.get("seg_map_path"),
                            self.img_suffix, self.seg_map_suffix, data_root=self.data_root)
        return [info for info in super().load_data_list() if info["img_path"] not in self.skip_files]


@TRANSFORMS.register_module()
class CheckSegMapSize(BaseTransform):
    """Raise ValueError naming both files when a label map is not single-channel of its image's size.

    Required keys: `gt_seg_map`, `ori_shape` (from `LoadImageFromFile`), `img_path`, `seg_map_path`.
    Without `gt_seg_map` (inference: mmseg's `inference_model` / `MMSegInferencer` drop `LoadAnnotations`
    from the test pipeline) there is nothing to check and the results pass through.
    """

    def transform(self, results):
        if "gt_seg_map" not in results:
            return results
        label_shape = tuple(results["gt_seg_map"].shape)
        image_shape = tuple(results["ori_shape"][:2])
        if label_shape != image_shape:
            raise ValueError(f"label map {results['seg_map_path']!r} has shape {label_shape} but its image "
                             f"{results['img_path']!r} is {image_shape} (H, W); expected a single-channel "
                             f"label map of the image's size")
        return results
