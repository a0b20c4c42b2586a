"""Whole classification models of each family through `tools/export.py`'s exporters (dynamo ONNX in onnxruntime,
traced TorchScript): dynamic batch and H/W, compared with eager at two input sizes.
Small members of each family (fewer blocks and channels: the same stem, stage, head and layer code)."""
import importlib.util
from pathlib import Path

import pytest
import torch

from localattn.models.elsa_swin import ELSASwinTransformer
from localattn.models.san import SAN
from localattn.models.xresnet import XResNet

TOOL = Path(__file__).resolve().parents[2] / "tools" / "export.py"
spec = importlib.util.spec_from_file_location("export_tool", TOOL)
export_tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(export_tool)

SMALL_MODELS = {
    "elsa_swin": lambda: ELSASwinTransformer(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4), num_classes=10),
    "san_pairwise": lambda: SAN("pairwise", layers=(1, 0, 0, 0, 1), kernels=(3, 3, 3, 3, 3), num_classes=10),
    "san_patchwise": lambda: SAN("patchwise", layers=(0, 1, 0, 0, 0), kernels=(3, 3, 3, 3, 3), num_classes=10),
    "xresnet_ssa": lambda: XResNet(18, sa=True, num_classes=10),
}
FORMAT_TOLERANCE = {"onnx": 1e-4, "torchscript": 1e-5}  # pt2: torch.export is the first step of the ONNX export


@pytest.mark.parametrize("fmt", sorted(FORMAT_TOLERANCE))
@pytest.mark.parametrize("family", sorted(SMALL_MODELS))
def test_exported_model_matches_eager_at_two_sizes(family, fmt, tmp_path):
    torch.manual_seed(0)
    model = SMALL_MODELS[family]().eval()
    run = export_tool.export(model, torch.randn(2, 3, 64, 96), fmt, str(tmp_path / f"model{export_tool.FORMATS[fmt]}"))
    for shape in ((2, 3, 64, 96), (3, 3, 96, 64)):
        x = torch.randn(shape)
        with torch.no_grad():
            expected = model(x)
        got = run(x)
        assert got.shape == expected.shape == (shape[0], 10)
        torch.testing.assert_close(got, expected, rtol=0, atol=FORMAT_TOLERANCE[fmt])
