"""What every family offers a timm user (README "Backbone contract"), checked on one registered model each."""
import math

import pytest
import timm
import torch

import localattn  # noqa: F401  (registers the models)

ONE_PER_FAMILY = ["elsa_swin_tiny", "san10_pairwise", "xresnet18_ssa"]


def rgb_conv_for(in_chans, weight):
    """timm's documented in_chans rule, written out: 1 channel = sum over RGB; more = RGB repeated, scaled 3/in_chans."""
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = math.ceil(in_chans / 3)
    return weight.repeat(1, repeats, 1, 1)[:, :in_chans] * (3 / in_chans)


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_pretrained_rgb_weights_adapt_to_in_chans(name, tmp_path):
    torch.manual_seed(0)
    rgb = timm.create_model(name, num_classes=10)
    path = tmp_path / "rgb.pth"
    torch.save(rgb.state_dict(), path)
    first_conv = f"{rgb.pretrained_cfg['first_conv']}.weight"
    for in_chans in (1, 5):
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                                  in_chans=in_chans, num_classes=10)
        loaded = model.state_dict()
        torch.testing.assert_close(loaded[first_conv], rgb_conv_for(in_chans, rgb.state_dict()[first_conv]),
                                   rtol=0, atol=0)
        torch.testing.assert_close(loaded["head.weight"], rgb.state_dict()["head.weight"], rtol=0, atol=0)
        with torch.no_grad():
            assert model.eval()(torch.randn(1, in_chans, 128, 128)).shape == (1, 10)
