"""Fixtures of the detection tests: a tiny synthetic COCO dataset and a cls checkpoint in our trainer's format."""
import argparse

import pytest
import torch

from det_helpers import TINY_ELSA_SWIN


@pytest.fixture(scope="session")
def coco_root(tmp_path_factory):
    from localattn.det.synthetic import make_synthetic_coco
    return make_synthetic_coco(str(tmp_path_factory.mktemp("synthetic_coco")), num_train=8, num_val=4, seed=1)


@pytest.fixture(scope="session")
def cls_checkpoint(tmp_path_factory):
    """A tiny ELSA-Swin classifier saved as our cls trainer saves (timm layout: state_dict, state_dict_ema,
    epoch, args, ...). The EMA weights differ from the raw ones, so a test can tell which were loaded."""
    from localattn.models.elsa_swin import ELSASwinTransformer
    torch.manual_seed(0)
    model = ELSASwinTransformer(num_classes=10, **TINY_ELSA_SWIN)
    state = model.state_dict()
    ema = {k: (v * 0.5 if v.is_floating_point() else v) for k, v in state.items()}
    path = str(tmp_path_factory.mktemp("cls") / "elsa_swin_tiny_cls.pth.tar")
    torch.save(dict(epoch=3, arch="elsa_swin_tiny", state_dict=state, state_dict_ema=ema, optimizer={},
                    args=argparse.Namespace(model="elsa_swin_tiny", lr=1e-3), metric=12.5, version=2), path)
    return path
