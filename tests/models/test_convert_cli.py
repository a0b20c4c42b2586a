"""tools/convert_checkpoint.py: official-layout checkpoints in, strictly verified localattn checkpoints out."""
import os
import subprocess
import sys

import pytest
import timm
import torch

import localattn.cls  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(ROOT, "tools", "convert_checkpoint.py")


def run(*args):
    return subprocess.run([sys.executable, TOOL, *map(str, args)], capture_output=True, text=True)


def run_here(tool_here, *args):
    """`run(*args)` in this process (tests/conftest.py `tool_here`, as `python tools/convert_checkpoint.py` runs)."""
    return tool_here("convert_checkpoint.py", *args)


def test_san_official_checkpoint_converts_and_reloads(tmp_path, tool_here):
    source = timm.create_model("san10_pairwise")
    official = {"epoch": 100, "state_dict": {"module." + k: v for k, v in source.state_dict().items()}}
    torch.save(official, tmp_path / "san.pth")
    result = run_here(tool_here, tmp_path / "san.pth", tmp_path / "out" / "san10.pth", "--model", "san10_pairwise")
    assert result.returncode == 0, result.stderr
    converted = torch.load(tmp_path / "out" / "san10.pth", weights_only=True)["state_dict"]
    reloaded = timm.create_model("san10_pairwise", pretrained=True,
                                 pretrained_cfg_overlay=dict(file=str(tmp_path / "out" / "san10.pth")))
    for key, value in source.state_dict().items():
        assert torch.equal(converted[key], value) and torch.equal(reloaded.state_dict()[key], value), key


def test_wrong_architecture_fails_listing_keys(tmp_path):
    torch.save({"state_dict": timm.create_model("san10_pairwise").state_dict()}, tmp_path / "san.pth")
    result = run(tmp_path / "san.pth", tmp_path / "x.pth", "--model", "san15_pairwise")
    assert result.returncode != 0
    assert "missing keys" in result.stderr and not (tmp_path / "x.pth").exists()


@pytest.mark.parametrize("model_name", ["elsa_swin_tiny"])
def test_ema_weights_are_selected_on_request(tmp_path, model_name, tool_here):
    model = timm.create_model(model_name, num_classes=5)
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save({"state_dict": model.state_dict(), "state_dict_ema": ema}, tmp_path / "c.pth")
    assert run_here(tool_here, tmp_path / "c.pth", tmp_path / "o.pth", "--model", model_name, "--num-classes", 5,
                    "--use-ema").returncode == 0
    out = torch.load(tmp_path / "o.pth", weights_only=True)["state_dict"]
    assert torch.equal(out["head.weight"], ema["head.weight"])
