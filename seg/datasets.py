"""ADE20K-layout data with clear errors: missing folders/files and label maps that don't fit their image.

`CheckedADE20KDataset` is mmseg's `ADE20KDataset` (`images/<split>/*.jpg` ↔ `annotations/<split>/*.png`,
`reduce_zero_label=True`) that checks the folders and the image ↔ annotation pairing when it is built;
`CheckSegMapSize` (placed right after `LoadAnnotations`) checks each label map against its image.
"""
import os

from mmcv.transforms import BaseTransform
from mmseg.datasets import ADE20KDataset
from mmseg.registry import DATASETS, TRANSFORMS

_SHOWN = 5  # how many offending files an error lists


@DATASETS.register_module()
class CheckedADE20KDataset(ADE20KDataset):
    """ADE20KDataset that fails at construction, naming the path, when the layout is broken."""

    def load_data_list(self):
        img_dir = self.data_prefix.get("img_path")
        ann_dir = self.data_prefix.get("seg_map_path")
        for what, folder in (("image", img_dir), ("annotation", ann_dir)):
            if folder is not None and not os.path.isdir(folder):
                raise FileNotFoundError(f"ADE20K {what} folder not found: {folder!r} (expected the "
                                        f"ADEChallengeData2016 layout images|annotations/{{training,validation}} "
                                        f"under data_root={self.data_root!r})")
        data_list = super().load_data_list()
        if not data_list:
            raise FileNotFoundError(f"no '*{self.img_suffix}' images in {img_dir!r}")
        missing = [info["seg_map_path"] for info in data_list
                   if "seg_map_path" in info and not os.path.isfile(info["seg_map_path"])]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} of {len(data_list)} images have no annotation file, e.g. "
                + ", ".join(repr(path) for path in missing[:_SHOWN]))
        return data_list


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
