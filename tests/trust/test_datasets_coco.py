"""Broken COCO datasets stop the detection trainer's real entry point (`localattn.mm.train.main`, what
tools/train.py runs) before the runner is built: exit code 2 and a message naming the json or image file.
Each case is a real on-disk dataset (json + PNG images) with one defect; the skip and warn policies."""
import json
import os
import shutil

import pytest
from PIL import Image

from localattn.det.synthetic import make_synthetic_coco

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "det", "synthetic", "mask_elsa_synthetic.py")
TRAIN_JSON = os.path.join("annotations", "instances_train2017.json")


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALATTN_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return make_synthetic_coco(str(tmp_path_factory.mktemp("coco")), num_train=3, num_val=2, seed=4)


@pytest.fixture
def coco(pristine, tmp_path):
    root = tmp_path / "coco"
    shutil.copytree(pristine, root)
    return root


def edit_json(root, change):
    path = root / TRAIN_JSON
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))
    return str(path)


def first(content, key):
    return content[key][0]


def set_ann(**fields):
    return lambda c: first(c, "annotations").update(fields)


def replace_image_file(root, make):
    content = json.loads((root / TRAIN_JSON).read_text())
    path = root / "train2017" / first(content, "images")["file_name"]
    make(path)
    return str(path)


def train(root, tmp_path, *extra):
    from localattn.mm.train import main
    return main([CONFIG, "--work-dir", str(tmp_path / "work"), "--no-validate", "--cfg-options",
                 f"data_root={root}/", "train_cfg.max_epochs=1", *extra])


JSON_DEFECTS = {  # name: (change to the train json, words the message must contain)
    "bbox_negative_x": (set_ann(bbox=[-5.0, 10.0, 20.0, 20.0]), "not inside"),
    "bbox_negative_width": (set_ann(bbox=[10.0, 10.0, -20.0, 20.0]), "negative width"),
    "bbox_past_right_edge": (set_ann(bbox=[100.0, 10.0, 60.0, 20.0]), "not inside its 128x128 image"),
    "bbox_not_numbers": (set_ann(bbox=[10.0, "10", 20.0, 20.0]), "4 finite numbers"),
    "bbox_three_numbers": (set_ann(bbox=[10.0, 10.0, 20.0]), "4 finite numbers"),
    "polygon_odd_length": (set_ann(segmentation=[[10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 10.0]]), ">= 3 (x, y) points"),
    "polygon_two_points": (set_ann(segmentation=[[10.0, 10.0, 30.0, 30.0]]), ">= 3 (x, y) points"),
    "polygon_outside_image": (set_ann(segmentation=[[10.0, 10.0, 300.0, 10.0, 30.0, 30.0]]), "leaves its"),
    "rle_wrong_size": (set_ann(segmentation={"size": [64, 64], "counts": [4096]}), "RLE size"),
    "rle_counts_do_not_cover_image": (set_ann(segmentation={"size": [128, 128], "counts": [100, 50]}),
                                      "add up to 150 pixels"),
    "rle_string_malformed": (set_ann(segmentation={"size": [128, 128], "counts": "0a" + "\x7f"}), "do not decode"),
    "segmentation_wrong_type": (set_ann(segmentation="polygon"), "neither polygons"),
    "duplicate_image_id": (lambda c: c["images"][1].update(id=c["images"][0]["id"]), "used twice"),
    "duplicate_category_id": (lambda c: c["categories"].append(dict(c["categories"][0])), "defined twice"),
    "image_size_not_positive": (lambda c: first(c, "images").update(width=0), "not positive integers"),
}


@pytest.mark.parametrize("case", sorted(JSON_DEFECTS))
def test_broken_annotation_stops_train_naming_the_json(case, coco, tmp_path, capsys):
    change, words = JSON_DEFECTS[case]
    ann_file = edit_json(coco, change)
    assert train(coco, tmp_path) == 2
    err = capsys.readouterr().err
    assert ann_file in err and words in err, err
    assert not (tmp_path / "work").exists() or not any(f.endswith(".pth") for f in os.listdir(tmp_path / "work"))


IMAGE_DEFECTS = {
    "image_smaller_than_the_json_says": (lambda p: Image.new("RGB", (96, 128)).save(p), "is 96x128 but"),
    "image_file_unreadable": (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\ngarbage"), "cannot be read"),
}


@pytest.mark.parametrize("case", sorted(IMAGE_DEFECTS))
def test_broken_image_file_stops_train_naming_it(case, coco, tmp_path, capsys):
    make, words = IMAGE_DEFECTS[case]
    path = replace_image_file(coco, make)
    assert train(coco, tmp_path) == 2
    err = capsys.readouterr().err
    assert path in err and words in err, err


def test_skip_trains_on_a_cleaned_copy_and_warn_keeps_the_file(coco, tmp_path):
    from localattn.det.datacheck import check_coco_datasets
    from localattn.mm.cli import load_config
    edit_json(coco, set_ann(bbox=[-5.0, 10.0, 20.0, 20.0]))
    cfg = load_config(CONFIG, {"data_root": f"{coco}/"})
    bad_id = json.loads((coco / TRAIN_JSON).read_text())["annotations"][0]["id"]
    cfg.data_check = "warn"
    with pytest.warns(UserWarning, match=f"using anyway .*{TRAIN_JSON}: annotation id {bad_id}"):
        check_coco_datasets(cfg, ("train",))
    assert cfg.train_dataloader.dataset.ann_file == TRAIN_JSON  # unchanged
    cfg.data_check = "skip"
    with pytest.warns(UserWarning, match=f"skipping .*annotation id {bad_id}"):
        check_coco_datasets(cfg, ("train",))
    cleaned = json.loads(open(cfg.train_dataloader.dataset.ann_file).read())
    original = json.loads((coco / TRAIN_JSON).read_text())
    assert [a["id"] for a in cleaned["annotations"]] == [a["id"] for a in original["annotations"][1:]]
    assert cleaned["images"] == original["images"]


def test_image_sizes_are_cached_by_file_stats(coco, monkeypatch):
    from localattn.det import datacheck
    reads = []
    original = datacheck._image_size
    monkeypatch.setattr(datacheck, "_image_size", lambda path: reads.append(path) or original(path))
    content = json.loads((coco / TRAIN_JSON).read_text())
    for _ in range(2):
        datacheck.coco_problems(content, str(coco / TRAIN_JSON), str(coco / "train2017"), show_progress=False)
    assert sorted(reads) == sorted(set(reads)) and len(reads) == 3  # each image read once, then from the cache
