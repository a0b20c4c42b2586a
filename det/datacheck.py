"""Up-front validation of COCO-format instance datasets, so a broken file fails before training starts
with an error naming it (instead of a bare JSONDecodeError, a missing image half-way through an epoch, or
annotations that mmdet silently drops or mis-reads into a different mAP).

Checked: the json's structure; unique image and category ids; every annotation's image id and category id
defined, its bbox four finite numbers, non-negative, inside its image; its segmentation well-formed
polygons inside the image or an RLE of the image's size; every image file present, of the size the json
says (read from the file header, cached by file stats). Policy (`data_check` config key, `--data-check`):
fail, skip (train on a cleaned copy of the json without the bad annotations / images), warn.
"""
import hashlib
import json
import math
import os
import os.path as osp

from PIL import Image

from localattn.datacheck import DataCheckError, apply_policy, cache_dir, file_facts

REQUIRED_IMAGE_KEYS = ("id", "file_name", "height", "width")
REQUIRED_ANN_KEYS = ("id", "image_id", "category_id", "bbox")
EDGE_TOLERANCE = 1.0  # pixels a box or polygon may stick out of its image (rounding in real COCO files)


class DatasetError(DataCheckError):
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
    for cat in coco["categories"]:
        _field(cat, "id", ann_file, "category")
    for ann in coco.get("annotations", []):
        for key in REQUIRED_ANN_KEYS:
            _field(ann, key, ann_file, "annotation")
    return coco


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _outside(x, y, width, height):
    return x < -EDGE_TOLERANCE or y < -EDGE_TOLERANCE or x > width + EDGE_TOLERANCE or y > height + EDGE_TOLERANCE


def image_problem(img):
    """Why an `images` record is unusable (None when it is fine)."""
    if not all(isinstance(img[k], int) and img[k] > 0 for k in ("height", "width")):
        return f"height/width {img['height']!r}/{img['width']!r} are not positive integers"
    return None


def bbox_problem(bbox, width, height):
    """Why an [x, y, w, h] box is unusable in a `width` x `height` image (None when it is fine)."""
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_number(v) for v in bbox):
        return f"bbox {bbox!r} is not [x, y, w, h] of 4 finite numbers"
    x, y, w, h = bbox
    if w < 0 or h < 0:
        return f"bbox {bbox!r} has a negative width or height"
    if _outside(x, y, width, height) or _outside(x + w, y + h, width, height):
        return f"bbox {bbox!r} is not inside its {width}x{height} image"
    return None


def rle_string_counts(counts):
    """Run lengths of a compressed COCO RLE string (pycocotools' rleFrString); ValueError when malformed."""
    runs, p = [], 0
    while p < len(counts):
        x, k, more = 0, 0, True
        while more:
            if p >= len(counts):
                raise ValueError("the string ends inside a run length")
            c = ord(counts[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {counts[p]!r} is not in the RLE alphabet")
            x |= (c & 0x1f) << 5 * k
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << 5 * k
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return runs


def segmentation_problem(seg, width, height):
    """Why a `segmentation` (polygons or RLE) is unusable in a `width` x `height` image (None when fine)."""
    if isinstance(seg, list):
        if not seg:
            return "segmentation is an empty list of polygons"
        for poly in seg:
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2 or not all(_number(v) for v in poly):
                return f"polygon {str(poly)[:80]} is not a flat list of >= 3 (x, y) points"
            if any(_outside(x, y, width, height) for x, y in zip(poly[0::2], poly[1::2])):
                return f"polygon {str(poly)[:80]} leaves its {width}x{height} image"
        return None
    if isinstance(seg, dict):
        if seg.get("size") != [height, width]:
            return f"RLE size {seg.get('size')!r} is not the image's [height, width] = {[height, width]}"
        counts = seg.get("counts")
        try:
            runs = rle_string_counts(counts) if isinstance(counts, str) else counts
        except ValueError as err:
            return f"RLE counts do not decode: {err}"
        if not isinstance(runs, list) or not all(isinstance(r, int) and r >= 0 for r in runs):
            return "RLE counts are not a list of non-negative integers or a compressed RLE string"
        if sum(runs) != height * width:
            return f"RLE run lengths add up to {sum(runs)} pixels, not height*width = {height * width}"
        return None
    return f"segmentation of type {type(seg).__name__} is neither polygons (list) nor RLE (dict)"


def annotation_problem(ann, images, category_ids):
    """Why an annotation is unusable, given {image id: image record} and the defined category ids."""
    image = images.get(ann["image_id"])
    if image is None:
        return f"image_id {ann['image_id']!r} is not in 'images'"
    if ann["category_id"] not in category_ids:
        return f"category_id {ann['category_id']!r} is not in 'categories' {sorted(category_ids)[:20]}"
    width, height = image["width"], image["height"]
    problem = bbox_problem(ann["bbox"], width, height)
    if problem is None and "segmentation" in ann:
        problem = segmentation_problem(ann["segmentation"], width, height)
    return problem


def _image_size(path):
    """[width, height] from the image file's header, or why it cannot be read (runs via `file_facts`)."""
    try:
        with Image.open(path) as image:
            return list(image.size)
    except (OSError, ValueError, SyntaxError) as err:
        return f"cannot be read as an image: {err}"


def coco_problems(coco, ann_file, img_dir, show_progress=True):
    """[(location, problem, kind, id)] of a structurally valid COCO dict: kind 'image' / 'annotation' /
    'category' and the record's id; every location names `ann_file` (or the image file) and the record."""
    found, seen = [], {}

    def image_where(img):
        return f"{ann_file}: image id {img['id']!r} ({img['file_name']})"

    for img in coco["images"]:
        if img["id"] in seen:
            found.append((image_where(img), f"image id {img['id']!r} is used twice (also by "
                                            f"{seen[img['id']]['file_name']})", "image", img["id"]))
        elif (problem := image_problem(img)) is not None:
            found.append((image_where(img), problem, "image", img["id"]))
        seen.setdefault(img["id"], img)
    cat_ids = [cat["id"] for cat in coco["categories"]]
    for dup in sorted({c for c in cat_ids if cat_ids.count(c) > 1}, key=str):
        found.append((f"{ann_file}: category id {dup!r}", f"category id {dup!r} is defined twice", "category", dup))
    bad = {i for _, _, kind, i in found if kind == "image"}
    images = {i: img for i, img in seen.items() if i not in bad}
    if img_dir is not None:
        paths = {osp.join(img_dir, img["file_name"]): img for img in images.values()}
        sizes = file_facts(sorted(paths), _image_size, "coco-image-size-v1", img_dir,
                           f"reading image sizes of {ann_file}", show_progress=show_progress)
        for path, size in sizes.items():
            img = paths[path]
            if isinstance(size, str) or size != [img["width"], img["height"]]:
                found.append((path, size if isinstance(size, str) else f"is {size[0]}x{size[1]} but {ann_file} "
                              f"says {img['width']}x{img['height']} (image id {img['id']!r})", "image", img["id"]))
                images.pop(img["id"])
    for ann in coco.get("annotations", []):
        if (problem := annotation_problem(ann, images, set(cat_ids))) is not None:
            found.append((f"{ann_file}: annotation id {ann['id']!r} (image id {ann['image_id']!r})", problem,
                          "annotation", ann["id"]))
    return found


def cleaned_copy(coco, ann_file, skipped):
    """Write `coco` without the (kind, id) records in `skipped` (an image takes its annotations along) into
    the cache folder; returns its path."""
    kept_images = [img for img in coco["images"] if ("image", img["id"]) not in skipped]
    kept_ids = {img["id"] for img in kept_images}
    kept = dict(coco, images=kept_images, annotations=[
        a for a in coco.get("annotations", []) if ("annotation", a["id"]) not in skipped and a["image_id"] in kept_ids])
    digest = hashlib.sha256(repr((sorted(map(repr, skipped)), osp.abspath(ann_file))).encode()).hexdigest()[:16]
    path = osp.join(osp.abspath(cache_dir()), f"coco-cleaned-{digest}-{osp.basename(ann_file)}")
    os.makedirs(cache_dir(), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(kept, f)
    os.replace(tmp, path)
    return path


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


def _check_one(ann_file, img_dir, policy, need_annotations=True):
    """Check one json (+ its image folder) under `policy`; the path of its cleaned copy when records are
    skipped, else None."""
    coco = read_coco_json(ann_file, need_annotations=need_annotations)
    if img_dir is not None:
        check_images_exist(coco, ann_file, img_dir)
    found = coco_problems(coco, ann_file, img_dir)
    skipped = apply_policy({where: problem for where, problem, _, _ in found}, policy, "COCO data check")
    records = {(kind, i) for where, _, kind, i in found if where in skipped}
    return cleaned_copy(coco, ann_file, records) if records else None


def check_coco_datasets(cfg, splits):
    """Validate the annotation json + image files of the COCO-style datasets and evaluators of `splits`.

    Policy `cfg.data_check` (default 'fail'); under 'skip' the datasets and evaluators of a json with
    problems are pointed at its cleaned copy. Returns the checked json files.
    """
    policy = cfg.get("data_check") or "fail"
    checked = {}  # (ann_file, img_dir) -> its cleaned copy, or None
    for split in splits:
        loader = cfg.get(f"{split}_dataloader")
        for ds in leaf_datasets(loader["dataset"]) if loader else []:
            if not str(ds.get("ann_file", "")).endswith(".json"):
                continue
            root = ds.get("data_root") or ""
            ann_file = _resolve(root, ds["ann_file"])
            img_dir = _resolve(root, (ds.get("data_prefix") or {}).get("img", ""))
            if (ann_file, img_dir) not in checked:
                checked[ann_file, img_dir] = _check_one(ann_file, img_dir, policy,
                                                        need_annotations=not ds.get("test_mode", False))
            if checked[ann_file, img_dir]:
                ds["ann_file"] = checked[ann_file, img_dir]
        evaluator = cfg.get(f"{split}_evaluator")
        for metric in (evaluator if isinstance(evaluator, list) else [evaluator]) if evaluator else []:
            ann_file = metric.get("ann_file")
            if not ann_file or metric.get("format_only"):
                continue
            if not any(a == ann_file for a, _ in checked):
                checked[ann_file, None] = _check_one(ann_file, None, policy)
            cleaned = [use for (a, _), use in checked.items() if a == ann_file and use]
            if cleaned:
                metric["ann_file"] = cleaned[0]
    return sorted({a for a, _ in checked})

