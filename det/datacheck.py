"""Up-front validation of COCO-format instance datasets, so a broken file fails before training starts
with an error naming it (instead of a bare JSONDecodeError or a missing image half-way through an epoch)."""
import json
import os.path as osp

REQUIRED_IMAGE_KEYS = ("id", "file_name", "height", "width")
REQUIRED_ANN_KEYS = ("id", "image_id", "category_id", "bbox")


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the message names the file."""


def read_coco_json(ann_file, need_annotations=True):
    """Load and structurally validate a COCO instances json; returns the parsed dict."""
    if not osp.isfile(ann_file):
        raise FileNotFoundError(f"COCO annotation file not found: {ann_file!r}")
    try:
        with open(ann_file, encoding="utf-8") as f:
            coco = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"COCO annotation file {ann_file!r} is not valid JSON: {err}") from None
    required = ("images", "categories") + (("annotations",) if need_annotations else ())
    if not isinstance(coco, dict) or any(not isinstance(coco.get(k), list) for k in required):
        found = list(coco) if isinstance(coco, dict) else type(coco).__name__
        raise DatasetError(f"COCO annotation file {ann_file!r} needs the lists {list(required)}; found {found}")
    for img in coco["images"]:
        for key in REQUIRED_IMAGE_KEYS:
            _field(img, key, ann_file, "image")
    image_ids = {img["id"] for img in coco["images"]}
    category_ids = {_field(cat, "id", ann_file, "category") for cat in coco["categories"]}
    for ann in coco.get("annotations", []):
        for key in REQUIRED_ANN_KEYS:
            _field(ann, key, ann_file, "annotation")
        if ann["image_id"] not in image_ids or ann["category_id"] not in category_ids:
            raise DatasetError(f"{ann_file!r}: annotation id {ann['id']} refers to image_id {ann['image_id']} / "
                               f"category_id {ann['category_id']}, which the file does not define")
        if len(ann["bbox"]) != 4:
            raise DatasetError(f"{ann_file!r}: annotation id {ann['id']} has bbox {ann['bbox']!r}, expected [x, y, w, h]")
    return coco


def _field(record, key, ann_file, kind):
    if not isinstance(record, dict) or key not in record:
        raise DatasetError(f"{ann_file!r}: {kind} entry {str(record)[:120]} has no {key!r}")
    return record[key]


def check_images_exist(coco, ann_file, img_dir):
    """Every `file_name` of `coco['images']` must exist under `img_dir`."""
    missing = [img["file_name"] for img in coco["images"] if not osp.isfile(osp.join(img_dir, img["file_name"]))]
    if missing:
        shown = ", ".join(missing[:5]) + (f" ... ({len(missing)} in total)" if len(missing) > 5 else "")
        raise FileNotFoundError(f"{len(missing)} image(s) listed in {ann_file!r} are missing under {img_dir!r}: {shown}")


def _resolve(root, path):
    return path if not root or osp.isabs(path) else osp.join(root, path)


def leaf_datasets(dataset_cfg):
    """The dataset dicts inside wrappers (RepeatDataset / ClassBalancedDataset `dataset`, ConcatDataset `datasets`)."""
    if "dataset" in dataset_cfg:
        return leaf_datasets(dataset_cfg["dataset"])
    if "datasets" in dataset_cfg:
        return [leaf for ds in dataset_cfg["datasets"] for leaf in leaf_datasets(ds)]
    return [dataset_cfg]


def check_coco_datasets(cfg, splits):
    """Validate the annotation json + image files of the COCO-style datasets and evaluators of `splits`."""
    checked = set()
    for split in splits:
        loader = cfg.get(f"{split}_dataloader")
        for ds in leaf_datasets(loader["dataset"]) if loader else []:
            if not str(ds.get("ann_file", "")).endswith(".json"):
                continue
            root = ds.get("data_root") or ""
            ann_file = _resolve(root, ds["ann_file"])
            img_dir = _resolve(root, (ds.get("data_prefix") or {}).get("img", ""))
            if (ann_file, img_dir) not in checked:
                coco = read_coco_json(ann_file, need_annotations=not ds.get("test_mode", False))
                check_images_exist(coco, ann_file, img_dir)
                checked.add((ann_file, img_dir))
        evaluator = cfg.get(f"{split}_evaluator")
        for metric in (evaluator if isinstance(evaluator, list) else [evaluator]) if evaluator else []:
            ann_file = metric.get("ann_file")
            if ann_file and not any(ann_file == a for a, _ in checked) and not metric.get("format_only"):
                read_coco_json(ann_file)
                checked.add((ann_file, None))
    return sorted(a for a, _ in checked)

