"""ADE20K-layout data with clear errors: missing folders/files and label maps that don't fit their image.

`CheckedADE20KDataset` is mmseg's `ADE20KDataset` (`images/<split>/*.jpg` ↔ `annotations/<split>/*.png`,
`reduce_zero_label=True`) that checks the folders and the image ↔ annotation pairing when it is built
(`check_ade20k_layout`, also run by the tools before training/testing starts); `CheckSegMapSize`
(placed right after `LoadAnnotations`) checks each label map against its image.
"""
import os

from mmcv.transforms import BaseTransform
from mmseg.datasets import ADE20KDataset
from mmseg.registry import DATASETS, TRANSFORMS

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


@DATASETS.register_module()
class CheckedADE20KDataset(ADE20KDataset):
    """ADE20KDataset that fails at construction, naming the path, when the layout is broken."""

    def load_data_list(self):
        check_ade20k_layout(self.data_prefix.get("img_path"), self.data_prefix.get("seg_map_path"),
                            self.img_suffix, self.seg_map_suffix, data_root=self.data_root)
        return super().load_data_list()


@TRANSFORMS.register_module()
class CheckSegMapSize(BaseTransform):
    """Raise ValueError naming both files when a label map is not single-channel of its image's size.

    Required keys: `gt_seg_map`, `ori_shape` (from `LoadImageFromFile`), `img_path`, `seg_map_path`.
    """

    def transform(self, results):
        label_shape = tuple(results["gt_seg_map"].shape)
        image_shape = tuple(results["ori_shape"][:2])
        if label_shape != image_shape:
            raise ValueError(f"label map {results['seg_map_path']!r} has shape {label_shape} but its image "
                             f"{results['img_path']!r} is {image_shape} (H, W); expected a single-channel "
                             f"label map of the image's size")
        return results
