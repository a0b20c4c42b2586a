"""The synthetic ADE20K-layout generator and the clear errors of a broken ADE20K layout."""
import os
import shutil

import numpy as np
import pytest
from PIL import Image
from seg_helpers import NANO_CONFIG, NUM_CLASSES

import localattn.seg  # noqa: F401
from localattn.mm.cli import load_config
from localattn.seg.synthetic import class_colours, make_synthetic_ade20k


@pytest.fixture
def small_root(tmp_path):
    return make_synthetic_ade20k(str(tmp_path / "ade"), num_train=3, num_val=2, size=(40, 48), num_classes=3, seed=1)


def build_dataset(root, split="validation", test_mode=True):
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS
    init_default_scope("mmseg")  # as the Runner does: pipelines resolve mmseg transform names
    cfg = load_config(NANO_CONFIG, {"data_root": root})
    dataset = (cfg.val_dataloader if split == "validation" else cfg.train_dataloader).dataset
    return DATASETS.build(dict(dataset, test_mode=test_mode))


def test_synthetic_dataset_has_the_ade20k_layout_and_coloured_labels(small_root):
    for split, count in (("training", 3), ("validation", 2)):
        images = sorted(os.listdir(os.path.join(small_root, "images", split)))
        labels = sorted(os.listdir(os.path.join(small_root, "annotations", split)))
        assert len(images) == count and [i[:-4] + ".png" for i in images] == labels
    image = np.array(Image.open(os.path.join(small_root, "images", "training", "ADE_train_00000000.jpg")))
    label = np.array(Image.open(os.path.join(small_root, "annotations", "training", "ADE_train_00000000.png")))
    assert image.shape == (40, 48, 3) and label.shape == (40, 48) and label.dtype == np.uint8
    assert set(np.unique(label)) <= {0, 1, 2, 3} and (label[0] == 0).all() and (label[1:-1, 1:-1] > 0).all()

def test_synthetic_classes_have_their_colours(tmp_path):
    root = make_synthetic_ade20k(str(tmp_path), num_train=1, num_val=0, size=(64, 64), num_classes=3, noise=0.0)
    image = np.array(Image.open(os.path.join(root, "images", "training", "ADE_train_00000000.jpg"))).astype(float)
    label = np.array(Image.open(os.path.join(root, "annotations", "training", "ADE_train_00000000.png")))
    palette = np.concatenate([[[128, 128, 128]], class_colours(3)]).astype(float)  # label 0 is grey
    nearest = np.linalg.norm(image[:, :, None, :] - palette, axis=-1).argmin(-1)
    assert (nearest == label).mean() > 0.97  # all but JPEG ringing at region borders
    assert np.abs(image[nearest == label] - palette[label[nearest == label]]).mean() < 3


def test_dataset_reduces_zero_label_and_uses_the_synthetic_classes(synthetic_root):
    dataset = build_dataset(synthetic_root)
    assert dataset.metainfo["classes"] == ("wall", "building", "sky", "floor") and len(dataset) == 6
    sample = dataset[0]
    labels = np.unique(sample["data_samples"].gt_sem_seg.data.numpy())
    assert set(labels) <= set(range(NUM_CLASSES)) | {255} and 255 in labels  # frame 0 -> ignored


def test_missing_annotation_is_named(small_root):
    missing = os.path.join(small_root, "annotations", "validation", "ADE_val_00000001.png")
    os.remove(missing)
    with pytest.raises(FileNotFoundError, match="ADE_val_00000001.png"):
        build_dataset(small_root)


def test_missing_folder_is_named(small_root):
    shutil.rmtree(os.path.join(small_root, "images", "training"))
    with pytest.raises(FileNotFoundError, match=r"images/training"):
        build_dataset(small_root, split="training", test_mode=False)


def test_empty_image_folder_is_reported(small_root):
    for name in os.listdir(os.path.join(small_root, "images", "validation")):
        os.remove(os.path.join(small_root, "images", "validation", name))
    with pytest.raises(FileNotFoundError, match=r"no '\*\.jpg' images"):
        build_dataset(small_root)


@pytest.mark.parametrize("split, test_mode", [("validation", True), ("training", False)])
def test_label_map_of_the_wrong_size_is_named(small_root, split, test_mode):
    stem = "ADE_val_00000000" if split == "validation" else "ADE_train_00000000"
    Image.fromarray(np.ones((20, 48), np.uint8)).save(os.path.join(small_root, "annotations", split, stem + ".png"))
    dataset = build_dataset(small_root, split, test_mode)
    index = [os.path.basename(dataset.get_data_info(i)["img_path"]) for i in range(len(dataset))].index(stem + ".jpg")
    with pytest.raises(ValueError, match=rf"{stem}\.png.*\(20, 48\).*{stem}\.jpg.*\(40, 48\)"):
        dataset.prepare_data(index)


def test_train_tool_reports_a_broken_layout_before_training(small_root, capsys):
    from localattn.mm.train import main
    os.remove(os.path.join(small_root, "annotations", "training", "ADE_train_00000002.png"))
    assert main([NANO_CONFIG, "--work-dir", os.path.join(small_root, "work"), "--cfg-options",
                 f"data_root={small_root}"]) == 2
    err = capsys.readouterr().err
    assert "FileNotFoundError" in err and "ADE_train_00000002.png" in err
