"""Dataset checks, corrupt-image policy, atomic checkpoints, SAN's smoothing loss (fast, in-process)."""
import os
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from localattn.cls import checkpoint as ckpt
from localattn.cls.data import (CorruptImageError, CorruptImageWarning, DatasetError, ImageFolderSplit,
                                build_splits, scan_split)
from localattn.cls.losses import OffTargetSmoothingCrossEntropy
from localattn.cls.synthetic import make_image_folder
from localattn.cls.train import main as train_main


@pytest.fixture
def data(tmp_path, tiny_data):
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    return root


def test_synthetic_dataset_is_deterministic_and_balanced(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    names = make_image_folder(str(a), num_classes=3, train_per_class=2, val_per_class=1, size=24, seed=5)
    make_image_folder(str(b), num_classes=3, train_per_class=2, val_per_class=1, size=24, seed=5)
    classes, samples = scan_split(str(a), "train")
    assert classes == sorted(names) and [t for _, t in samples] == [0, 0, 1, 1, 2, 2]
    for path, _ in samples:
        pa = np.asarray(Image.open(path))
        assert pa.shape == (24, 24, 3)
        assert np.array_equal(pa, np.asarray(Image.open(str(path).replace(str(a), str(b)))))


def test_missing_and_empty_folders_are_named(data, tmp_path):
    with pytest.raises(DatasetError, match=str(tmp_path / "nowhere")):
        build_splits(str(tmp_path / "nowhere"))
    shutil.rmtree(data / "val")
    with pytest.raises(DatasetError, match=f"val folder not found: {data / 'val'}"):
        build_splits(str(data))
    (data / "val").mkdir()
    with pytest.raises(DatasetError, match=f"no class sub-folders in {data / 'val'}"):
        build_splits(str(data))
    shutil.copytree(data / "train", data / "val", dirs_exist_ok=True)
    empty = data / "train" / "red_disc"
    for f in empty.iterdir():
        f.unlink()
    with pytest.raises(DatasetError, match=f"empty class folder: {empty}"):
        build_splits(str(data))


def test_class_mismatch_lists_both_sides(data):
    os.rename(data / "val" / "red_disc", data / "val" / "purple_disc")
    with pytest.raises(DatasetError, match=r"only in train: \['red_disc'\], only in val: \['purple_disc'\]"):
        build_splits(str(data))


def test_corrupt_image_fails_with_path_or_is_skipped_with_warning(data):
    classes, samples = scan_split(str(data), "train")
    bad = samples[0][0]
    with open(bad, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(CorruptImageError, match=bad):
        ImageFolderSplit(classes, samples, corrupt="fail")[0]
    skipping = ImageFolderSplit(classes, samples, corrupt="skip")
    with pytest.warns(CorruptImageWarning, match=bad):
        image, target = skipping[0]
    expected = Image.open(samples[1][0]).convert("RGB")
    assert target == samples[1][1] and np.array_equal(np.asarray(image), np.asarray(expected))


def test_trainer_reports_dataset_errors_with_exit_code_2(data, tmp_path, capsys):
    shutil.rmtree(data / "train")
    assert train_main([str(data), "--model", "resnet10t", "--output", str(tmp_path)]) == 2
    assert f"train folder not found: {data / 'train'}" in capsys.readouterr().err


def test_atomic_save_never_leaves_a_truncated_file(tmp_path, monkeypatch):
    path = str(tmp_path / "last.pth.tar")
    ckpt.atomic_save({"epoch": 1, "w": torch.arange(4)}, path)

    def dying_save(obj, f):
        f.write(b"partial bytes")
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.atomic_save({"epoch": 2}, path)
    monkeypatch.undo()
    assert torch.load(path)["epoch"] == 1 and os.listdir(tmp_path) == ["last.pth.tar"]


def test_keeper_keeps_history_and_best(tmp_path):
    keeper = ckpt.CheckpointKeeper(str(tmp_path), history=2)
    for epoch, metric in enumerate([50.0, 70.0, 60.0, 65.0]):
        keeper.save({"epoch": epoch}, epoch, metric)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-2.pth.tar", "checkpoint-3.pth.tar", "last.pth.tar",
                                            "model_best.pth.tar"]
    assert torch.load(tmp_path / "model_best.pth.tar")["epoch"] == 1
    assert torch.load(tmp_path / "last.pth.tar")["epoch"] == 3


def test_san_smoothing_puts_eps_over_k_minus_1_on_wrong_classes():
    torch.manual_seed(0)
    logits, target = torch.randn(5, 7, dtype=torch.float64), torch.tensor([0, 3, 6, 2, 2])
    q = torch.full((5, 7), 0.1 / 6, dtype=torch.float64)
    q[torch.arange(5), target] = 0.9
    expected = -(q * F.log_softmax(logits, 1)).sum(1).mean()
    assert OffTargetSmoothingCrossEntropy(0.1)(logits, target).double().item() == pytest.approx(expected.item(), rel=1e-6)
