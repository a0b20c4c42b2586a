"""No code runs from a checkpoint, on any load path; a checkpoint that does not fit is refused with one line.

A crafted pickle whose `__reduce__` creates a marker file is handed to every path that reads checkpoints (cls
validate / --resume, mm tools/test.py / --resume / --load-from / model.pretrained, the converter, timm's
pretrained_cfg_overlay file): the marker must not exist afterwards, the tool exits non-zero, and its one error
line names the file and the refused type.
"""
import argparse
import collections
import os

import numpy as np
import pytest
import timm
import torch

from localattn.convert import CheckpointReadError, UnsafeCheckpointError, read_checkpoint
from trust_helpers import (CLS_RECIPE, CLS_TINY, CLS_TINY_TRAIN, DET_CONFIG, DET_TINY, SEG_CONFIG, SEG_NANO,
                           elsa_classifier_checkpoint, error_line, run_tool, run_tool_here, write_malicious,
                           write_truncated)


class LazyData(dict):
    """Tiny datasets in the three real formats and small classifier checkpoints, each made on first use."""

    def __init__(self, root):
        super().__init__()
        self.root = root

    def __missing__(self, key):
        self[key] = value = getattr(self, "_" + key)(self.root / key)
        return value

    @staticmethod
    def _imagefolder(path):
        from localattn.cls.synthetic import make_image_folder
        make_image_folder(str(path), num_classes=2, train_per_class=2, val_per_class=2, size=32, seed=0)
        return path

    @staticmethod
    def _ade(path):
        from localattn.seg.synthetic import make_synthetic_ade20k
        make_synthetic_ade20k(str(path), num_train=2, num_val=2, size=(64, 64), num_classes=4, seed=0)
        return path

    @staticmethod
    def _coco(path):
        from localattn.det.synthetic import make_synthetic_coco
        make_synthetic_coco(str(path), num_train=2, num_val=2, seed=0)
        return path

    @staticmethod
    def _seg_cls(path):
        return elsa_classifier_checkpoint(path, SEG_NANO)

    @staticmethod
    def _det_cls(path):
        return elsa_classifier_checkpoint(path, DET_TINY)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return LazyData(tmp_path_factory.mktemp("trust_data"))


@pytest.fixture
def malicious(tmp_path):
    """(checkpoint path, marker path that its payload would create)."""
    marker = tmp_path / "PAYLOAD_RAN"
    return write_malicious(tmp_path / "evil.pth", marker), marker


def seg_args(data, *extra):
    return ["--cfg-options", f"data_root={data['ade']}", "train_cfg.max_iters=1", "train_cfg.val_interval=10",
            "default_hooks.checkpoint.interval=1", *extra]


def det_args(data, *extra):
    return ["--cfg-options", f"data_root={data['coco']}", *extra]


# --- the reader itself -------------------------------------------------------------------------------------

@pytest.fixture
def load_calls(monkeypatch):
    """The `weights_only` argument of every torch.load call made during the test."""
    calls, load = [], torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return load(*args, **kwargs)
    monkeypatch.setattr(torch, "load", spy)
    return calls


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_the_payload_is_real_and_the_reader_refuses_it(tmp_path, legacy):
    path = write_malicious(tmp_path / "evil.pth", tmp_path / "ran_on_full_unpickling", legacy=legacy)
    torch.load(path, weights_only=False)  # what the old fallback did: the payload runs
    assert (tmp_path / "ran_on_full_unpickling").exists()
    os.remove(tmp_path / "ran_on_full_unpickling")
    with pytest.raises(UnsafeCheckpointError) as err:
        read_checkpoint(path)
    assert not (tmp_path / "ran_on_full_unpickling").exists()
    message = str(err.value)
    assert path in message and "exec" in message and "\n" not in message


def test_blocked_module_is_named(tmp_path):
    class System:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'ran'}",)
    torch.save({"x": System()}, tmp_path / "sys.pth")
    with pytest.raises(UnsafeCheckpointError, match=r"sys\.pth: it pickles posix\.system"):
        read_checkpoint(tmp_path / "sys.pth")
    assert not (tmp_path / "ran").exists()


def test_allow_listed_metadata_of_timm_mmengine_and_numpy_loads(tmp_path, load_calls):
    from mmengine.logging import MessageHub
    hub = MessageHub.get_instance("trust_test_hub")
    for value in (1.5, 2.5):
        hub.update_scalar("train/loss", value)
    hub.update_info("iter", np.int64(7))
    saved = {"state_dict": {"w": torch.arange(3.0)}, "args": argparse.Namespace(model="elsa_swin_tiny", lr=1e-3),
             "message_hub": hub.state_dict(), "milestones": collections.Counter([8, 11]),
             "np_rng": np.random.RandomState(0).get_state(), "scalar": np.float32(0.25)}
    torch.save(saved, tmp_path / "ok.pth")
    loaded = read_checkpoint(tmp_path / "ok.pth")
    assert loaded["args"].model == "elsa_swin_tiny" and loaded["milestones"] == collections.Counter([8, 11])
    buffer = loaded["message_hub"]["log_scalars"]["train/loss"]
    assert buffer.mean() == 2.0 and buffer.statistics("min") == 1.5  # mmengine's pickled statistics methods work
    assert loaded["message_hub"]["runtime_info"]["iter"] == 7 and loaded["scalar"] == np.float32(0.25)
    assert np.array_equal(loaded["np_rng"][1], saved["np_rng"][1])
    assert load_calls == [True]  # read safely, not by unpickling fully


def test_getattr_is_allowed_only_for_history_buffer_statistics(tmp_path):
    from mmengine.logging import HistoryBuffer

    class Reach:
        def __reduce__(self):
            return getattr, (HistoryBuffer, "__init__")
    torch.save({"x": Reach()}, tmp_path / "reach.pth")
    with pytest.raises(UnsafeCheckpointError, match=r"reach\.pth: it pickles getattr\(.*HistoryBuffer.*'__init__'\)"):
        read_checkpoint(tmp_path / "reach.pth")


def test_numpy_1x_names_load(tmp_path, load_calls):
    """Checkpoints written under numpy 1.x name `numpy.core.multiarray`; the allow-list has both spellings."""
    torch.save({"metric": np.float64(0.5), "hist": np.arange(3)}, tmp_path / "np2.pth",
               _use_new_zipfile_serialization=False)
    data = open(tmp_path / "np2.pth", "rb").read()
    assert b"numpy._core.multiarray" in data
    (tmp_path / "np1.pth").write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    loaded = read_checkpoint(tmp_path / "np1.pth")
    assert loaded["metric"] == 0.5 and loaded["hist"].tolist() == [0, 1, 2] and load_calls == [True]


def test_truncated_corrupt_and_safetensors_files(tmp_path):
    from safetensors.torch import save_file
    torch.save({"state_dict": {"w": torch.ones(1000)}}, tmp_path / "full.pth")
    write_truncated(tmp_path / "cut.pth", tmp_path / "full.pth")
    (tmp_path / "text.pth").write_text("<html>404 Not Found</html>")
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    for name in ("cut.pth", "text.pth", "bad.safetensors"):
        with pytest.raises(CheckpointReadError) as err:
            read_checkpoint(tmp_path / name)
        assert str(tmp_path / name) in str(err.value) and "\n" not in str(err.value)
    save_file({"w": torch.arange(4.0)}, tmp_path / "w.safetensors")
    assert torch.equal(read_checkpoint(tmp_path / "w.safetensors")["w"], torch.arange(4.0))


# --- every load path of the real tools -----------------------------------------------------------------------

def assert_refused(proc, path, marker):
    assert not marker.exists(), "the checkpoint's payload ran"
    assert proc.returncode == 2, proc.stderr[-4000:]
    line = error_line(proc.stderr)
    assert path in line and "exec" in line and "refusing to load" in line


@pytest.mark.slow
def test_cls_validate_and_resume_refuse_a_malicious_checkpoint(data, malicious):
    path, marker = malicious
    assert_refused(run_tool("validate.py", data["imagefolder"], "--checkpoint", path, "--model", "xresnet18",
                            *CLS_TINY), path, marker)
    assert_refused(run_tool("train.py", CLS_RECIPE, data["imagefolder"], "--resume", path, *CLS_TINY_TRAIN,
                            "--output", os.path.dirname(path)), path, marker)


@pytest.mark.slow
def test_mm_test_tool_refuses_a_malicious_checkpoint(data, malicious, tmp_path):
    path, marker = malicious
    assert_refused(run_tool("test.py", SEG_CONFIG, path, "--work-dir", tmp_path / "w", *seg_args(data)), path, marker)
    assert_refused(run_tool("test.py", DET_CONFIG, path, "--work-dir", tmp_path / "d", *det_args(data)), path, marker)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["--resume", "--load-from", "model.pretrained"])
def test_mm_train_refuses_a_malicious_checkpoint(data, malicious, tmp_path, how):
    path, marker = malicious
    flags = seg_args(data, f"model.pretrained={path}") if how == "model.pretrained" else [how, path, *seg_args(data)]
    assert_refused(run_tool("train.py", SEG_CONFIG, "--work-dir", tmp_path / "w", *flags), path, marker)


def test_converter_refuses_a_malicious_checkpoint(malicious, tmp_path):
    path, marker = malicious
    assert_refused(run_tool("convert_checkpoint.py", path, tmp_path / "out.pth", "--model", "san10_pairwise"),
                   path, marker)
    assert not (tmp_path / "out.pth").exists()


def test_timm_pretrained_file_refuses_a_malicious_checkpoint(malicious):
    import localattn.cls  # noqa: F401  (registers our timm models)
    path, marker = malicious
    with pytest.raises(UnsafeCheckpointError, match=path):
        timm.create_model("san10_pairwise", pretrained=True, pretrained_cfg_overlay=dict(file=path))
    assert not marker.exists()


# --- strict evaluation ---------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("task", ["det", "seg"])
def test_dense_test_refuses_a_classification_checkpoint(data, tmp_path, task):
    config, path, args = (DET_CONFIG, data["det_cls"], det_args(data)) if task == "det" else \
        (SEG_CONFIG, data["seg_cls"], seg_args(data))
    proc = run_tool("test.py", config, path, "--work-dir", tmp_path, *args)
    assert proc.returncode == 2, proc.stderr[-4000:]
    line = error_line(proc.stderr)
    assert f"checkpoint {path} does not fit" in line and "missing keys" in line
    assert ("decode_head.*" if task == "seg" else "roi_head.*") in line
    assert "This is a classification checkpoint of elsa_swin_tiny" in line
    assert f"pass --cfg-options model.pretrained={path}" in line and "--allow-partial-checkpoint" in line
    assert "test metrics (" not in proc.stdout  # no number was given (the tools' final metrics table)


@pytest.mark.slow
def test_load_from_refuses_a_classification_checkpoint_and_partial_loads_are_explicit(data, tmp_path, tool_here):
    proc = run_tool("train.py", SEG_CONFIG, "--work-dir", tmp_path / "a", "--load-from", data["seg_cls"],
                    *seg_args(data))
    assert proc.returncode == 2 and "This is a classification checkpoint" in error_line(proc.stderr)
    assert not os.path.exists(tmp_path / "a" / "iter_1.pth")
    # the opt-out is not about the process: in this process (tests/conftest.py), as `python tools/test.py` runs
    partial = tool_here("test.py", SEG_CONFIG, data["seg_cls"], "--work-dir", tmp_path / "b", "--eval", "mIoU",
                       "--allow-partial-checkpoint", *seg_args(data), threads=1)
    assert partial.returncode == 0, partial.stderr[-4000:]
    assert "--allow-partial-checkpoint: loading only the matching keys: checkpoint " in partial.stdout + partial.stderr
    assert "mIoU" in partial.stdout


def test_cls_validate_refuses_a_detection_checkpoint(data, tmp_path, capsys, monkeypatch):
    detector = {"meta": {"epoch": 12}, "state_dict": {
        **{f"backbone.{k}": v for k, v in read_checkpoint(data["det_cls"])["state_dict"].items()},
        "neck.lateral_convs.0.conv.weight": torch.zeros(64, 32, 1, 1), "rpn_head.rpn_conv.weight": torch.zeros(1),
        "roi_head.bbox_head.fc_cls.weight": torch.zeros(4, 256)}}
    torch.save(detector, tmp_path / "det.pth")
    code, err = run_tool_here("validate.py", data["imagefolder"], "--checkpoint", tmp_path / "det.pth",
                              "--model", "elsa_swin_tiny", "--model-kwargs", "embed_dim=32", "depths=[1,1,1,1]",
                              "num_heads=[1,2,4,8]", "group_width=4", *CLS_TINY, capsys=capsys, monkeypatch=monkeypatch)
    assert code == 2, err[-4000:]
    line = error_line(err)
    assert f"checkpoint {tmp_path / 'det.pth'} does not fit ELSASwinTransformer" in line
    assert "unexpected keys" in line and "backbone.*" in line and "This is a detection checkpoint" in line
    assert "tools/test.py CONFIG CHECKPOINT" in line
