"""Broken command lines: one line naming the flag or file, exit code 2, no traceback, before any work.

Each case runs the real `tools/<script>` in this process (`runpy`, as `python tools/<script> ...` does, without
an interpreter start-up per case). Where "before any work" matters, the dataset named does not exist, so a
tool that started working would fail on it instead.
"""
import os

import pytest
import torch

from trust_helpers import (CLS_RECIPE, CLS_TINY, SEG_CONFIG, SEG_NANO, elsa_classifier_checkpoint, error_line,
                           run_tool_here, write_truncated)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny ImageFolder, a fitting xresnet18 checkpoint, a truncated copy, an ELSA-Swin classifier checkpoint
    recording its model_kwargs, and a plain file (under which nothing can be written)."""
    import timm

    import localattn.cls  # noqa: F401
    from localattn.cls.synthetic import make_image_folder
    root = tmp_path_factory.mktemp("cli_errors")
    make_image_folder(str(root / "data"), num_classes=2, train_per_class=2, val_per_class=1, size=32, seed=0)
    torch.save({"arch": "xresnet18", "state_dict": timm.create_model("xresnet18", num_classes=2).state_dict()},
               root / "xresnet18.pth")
    (root / "plain_file").write_text("not a folder")
    return dict(data=root / "data", ckpt=root / "xresnet18.pth", plain=root / "plain_file",
                cut=write_truncated(root / "cut.pth", root / "xresnet18.pth"),
                elsa=elsa_classifier_checkpoint(root / "elsa.pth", SEG_NANO, num_classes=2))


@pytest.fixture
def tool(capsys, monkeypatch):
    """tool(script, *args) -> the one error line, after checking exit code 2 and that there is no traceback."""
    def run(script, *args):
        code, err = run_tool_here(script, *args, capsys=capsys, monkeypatch=monkeypatch)
        assert code == 2, err[-4000:]
        return error_line(err)
    return run


def test_train_names_a_missing_config_file(tool):
    assert "/nonexistent/run.cfg: no such file or folder" in tool("train.py", "/nonexistent/run.cfg")


def test_mm_train_names_a_missing_config_file(tool):
    assert "config file not found: configs/det/nope.py" in tool("train.py", "configs/det/nope.py")


def test_validate_refuses_img_size_0(tool, files):
    assert "--img-size: expected a positive integer (pixels), got 0" in tool(
        "validate.py", files["data"], "--checkpoint", files["ckpt"], *CLS_TINY, "--img-size", "0")


def test_train_refuses_batch_size_0(tool, files):
    assert "--batch-size: expected a positive integer, got 0" in tool(
        "train.py", CLS_RECIPE, files["data"], *CLS_TINY, "-b", "0")


def test_train_refuses_crop_pct_above_1(tool, files):
    assert "--crop-pct: expected a fraction in (0, 1], got 1.5" in tool(
        "train.py", CLS_RECIPE, files["data"], "--crop-pct", "1.5")


def test_unknown_model_lists_close_matches(tool, files):
    line = tool("train.py", CLS_RECIPE, files["data"], "--model", "elsa_swin_tinny")
    assert "--model 'elsa_swin_tinny' is not a registered timm model; close matches: elsa_swin_tiny" in line


def test_converter_unknown_model_lists_close_matches(tool, files, tmp_path):
    line = tool("convert_checkpoint.py", files["ckpt"], tmp_path / "o.pth", "--model", "san10_pairwize")
    assert "--model 'san10_pairwize'" in line and "san10_pairwise" in line


def test_argparse_errors_are_one_line(files, capsys, monkeypatch):
    code, err = run_tool_here("train.py", CLS_RECIPE, files["data"], "--epochs", "ten", capsys=capsys,
                              monkeypatch=monkeypatch)
    assert code == 2 and err.strip().splitlines() == [
        "tools/train.py: error: argument --epochs: invalid int value: 'ten' (see tools/train.py --help)"]


def test_unwritable_output_is_named(tool, files):
    out = files["plain"] / "runs"
    assert f"--output: cannot write to {out}" in tool("train.py", CLS_RECIPE, files["data"], "--output", out)
    out = files["plain"] / "r.json"
    assert f"--results-file: cannot write to {out}" in tool(
        "validate.py", files["data"], "--checkpoint", files["ckpt"], "--results-file", out)


def test_validate_names_a_missing_positional_path(tool, files):
    assert "/nonexistent/val: no such file or folder" in tool("validate.py", "/nonexistent/val", files["ckpt"])


def test_truncated_checkpoint_is_one_line_naming_it(tool, files):
    line = tool("validate.py", files["data"], "--checkpoint", files["cut"], "--model", "xresnet18", *CLS_TINY)
    assert f"cannot read checkpoint {files['cut']}: truncated, corrupt or not a PyTorch checkpoint" in line


def test_checkpoint_of_another_architecture_is_named(tool, files):
    line = tool("validate.py", files["data"], "--checkpoint", files["elsa"], "--model", "xresnet18", *CLS_TINY)
    assert f"checkpoint {files['elsa']} does not fit XResNet" in line
    assert "This is a classification checkpoint of elsa_swin_tiny" in line


def test_eval_metric_typo_is_refused_before_data_or_model(tool, files):
    line = tool("test.py", SEG_CONFIG, files["ckpt"], "--eval", "mIOU", "--cfg-options", "data_root=/nonexistent")
    assert "--eval mIOU: not a metric of mmseg; choose from mIoU, mDice, mFscore" in line


def test_mm_test_names_a_missing_checkpoint(tool):
    assert "checkpoint file not found: /nonexistent/epoch_12.pth" in tool("test.py", SEG_CONFIG,
                                                                          "/nonexistent/epoch_12.pth")


def test_mm_load_from_names_a_missing_checkpoint(tool, tmp_path):
    line = tool("train.py", SEG_CONFIG, "--work-dir", tmp_path, "--load-from", "/nonexistent/iter_4.pth",
                "--cfg-options", "data_root=/nonexistent")
    assert "--load-from: checkpoint file not found: /nonexistent/iter_4.pth" in line


def test_mm_unwritable_out_is_named(tool, files):
    out = files["plain"] / "preds.pkl"
    assert f"--out: cannot write to {out}" in tool("test.py", SEG_CONFIG, files["ckpt"], "--out", out,
                                                     "--cfg-options", "data_root=/nonexistent")
    assert not os.path.exists(out)
