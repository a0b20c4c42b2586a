"""Broken ADE20K-layout datasets stop the segmentation trainer's real entry point (`localattn.mm.train.main`,
what tools/train.py runs) before the runner is built: exit code 2 and a message naming the file (today an
out-of-range label crashes training with `IndexError: Target 199 is out of bounds` and no file name)."""
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from localattn.seg.synthetic import make_synthetic_ade20k

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "seg", "synthetic", "upernet_elsa_nano_synthetic.py")  # 4 classes


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALATTN_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return make_synthetic_ade20k(str(tmp_path_factory.mktemp("ade")), num_train=4, num_val=2, size=(32, 32),
                                 num_classes=4, seed=1)


@pytest.fixture
def ade(pristine, tmp_path):
    root = tmp_path / "ade"
    shutil.copytree(pristine, root)
    return root


def first(root, kind, split):
    folder = root / kind / split
    return folder / sorted(os.listdir(folder))[0]


def with_label_value(value):
    def write(path):
        label = np.array(Image.open(path))
        label[5:9, 5:9] = value
        Image.fromarray(label).save(path)
    return write


DEFECTS = {  # name: (kind, split, writer, words)
    "label_199": ("annotations", "training", with_label_value(199), "label values [199]"),
    "label_just_past_num_classes": ("annotations", "training", with_label_value(5), "label values [5]"),
    "label_out_of_range_in_val": ("annotations", "validation", with_label_value(150), "label values [150]"),
    "label_smaller_than_image": ("annotations", "training",
                                 lambda p: Image.new("L", (16, 32), 1).save(p), "is 16x32 but its image is 32x32"),
    "label_rgb": ("annotations", "training", lambda p: Image.new("RGB", (32, 32), (1, 1, 1)).save(p), "mode RGB"),
    "label_unreadable": ("annotations", "training", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\nxx"), "cannot be read"),
    "image_unreadable": ("images", "training", lambda p: p.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg"),
                         "cannot be read"),
}


def train(root, tmp_path, *extra):
    from localattn.mm.train import main
    return main([CONFIG, "--work-dir", str(tmp_path / "work"), "--cfg-options", f"data_root={root}",
                 "train_cfg.max_iters=2", "train_cfg.val_interval=2", *extra])


@pytest.mark.parametrize("case", sorted(DEFECTS))
def test_broken_file_stops_train_naming_it(case, ade, tmp_path, capsys):
    kind, split, write, words = DEFECTS[case]
    path = first(ade, kind, split)
    write(path)
    assert train(ade, tmp_path) == 2
    err = capsys.readouterr().err
    assert str(path) in err and words in err, err
    assert not (tmp_path / "work").exists() or not any(f.endswith(".pth") for f in os.listdir(tmp_path / "work"))


def test_skip_leaves_the_pair_out_and_warn_keeps_it(ade):
    from localattn.mm.cli import load_config
    from localattn.seg.task import check_data
    bad = first(ade, "annotations", "training")
    with_label_value(199)(bad)
    image = str(first(ade, "images", "training"))
    cfg = load_config(CONFIG, {"data_root": str(ade)})
    cfg.data_check = "warn"
    with pytest.warns(UserWarning, match=f"using anyway {bad}: label values"):
        check_data(cfg, ("train",))
    assert "skip_files" not in cfg.train_dataloader.dataset
    cfg.data_check = "skip"
    with pytest.warns(UserWarning, match=f"skipping {bad}"):
        check_data(cfg, ("train",))
    assert cfg.train_dataloader.dataset.skip_files == [image]
    from mmseg.registry import DATASETS
    from mmseg.utils import register_all_modules
    register_all_modules()
    dataset = DATASETS.build(dict(cfg.train_dataloader.dataset, pipeline=[]))
    assert len(dataset) == 3 and image not in [dataset.get_data_info(i)["img_path"] for i in range(3)]
