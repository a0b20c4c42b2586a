"""Fixtures of the segmentation tests: a synthetic ADE20K-layout dataset and a cls checkpoint of the nano
ELSA-Swin in our cls trainer's (timm) layout."""
import pytest
import torch
from seg_helpers import NANO_BACKBONE, NUM_CLASSES


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    from localattn.seg.synthetic import make_synthetic_ade20k
    return make_synthetic_ade20k(str(tmp_path_factory.mktemp("synthetic_ade")), num_train=32, num_val=6,
                                 size=(64, 64), num_classes=NUM_CLASSES, seed=0)


@pytest.fixture(scope="session")
def cls_checkpoint(tmp_path_factory):
    """(path, state_dict): a nano ELSA-Swin classifier saved like `cls/checkpoint.py` does (timm layout)."""
    from localattn.models.elsa_swin import ELSASwinTransformer
    torch.manual_seed(123)
    model = ELSASwinTransformer(num_classes=10, **NANO_BACKBONE)
    state_dict = {k: v.clone() for k, v in model.state_dict().items()}
    path = str(tmp_path_factory.mktemp("cls") / "last.pth.tar")
    torch.save(dict(epoch=3, arch="elsa_swin_nano", state_dict=state_dict, num_classes=10, version=2), path)
    return path, state_dict

