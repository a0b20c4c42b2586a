"""Fixtures of the classification tests: tiny synthetic ImageFolder datasets."""
import pytest

from localattn.cls.synthetic import make_image_folder


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """4 classes x (8 train, 4 val) images of 32x32 px."""
    root = str(tmp_path_factory.mktemp("tiny_imagefolder"))
    make_image_folder(root, num_classes=4, train_per_class=8, val_per_class=4, size=32, seed=1)
    return root


@pytest.fixture(scope="session")
def tiny_data_64(tmp_path_factory):
    """4 classes x (2 train, 1 val) images of 64x64 px (SAN needs >= 2x2 maps in its last stage)."""
    root = str(tmp_path_factory.mktemp("tiny_imagefolder_64"))
    make_image_folder(root, num_classes=4, train_per_class=2, val_per_class=1, size=64, seed=2)
    return root
