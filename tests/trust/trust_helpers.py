"""Helpers of the trust tests (checkpoint safety, CLI errors, run folders): a malicious checkpoint, tiny
checkpoints and datasets in the real formats, and runners of the real `tools/*`."""
import os
import runpy
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(ROOT, "tools")
CLS_RECIPE = os.path.join(ROOT, "configs", "cls", "xresnet18_imagewoof_128.yaml")
CLS_TINY = ["--img-size", "32", "-b", "4", "-j", "0", "--device", "cpu", "--no-progress"]
CLS_TINY_TRAIN = CLS_TINY + ["--epochs", "1", "--cooldown-epochs", "0", "--warmup-epochs", "0"]
SEG_CONFIG = os.path.join(ROOT, "configs", "seg", "synthetic", "upernet_elsa_nano_synthetic.py")
SEG_NANO = dict(embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4), group_width=4)  # SEG_CONFIG's backbone
DET_CONFIG = os.path.join(ROOT, "configs", "det", "synthetic", "mask_elsa_synthetic.py")
DET_TINY = dict(embed_dim=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8), group_width=4)  # DET_CONFIG's backbone


class Payload:
    """Unpickling this runs `exec(code)`: what a hostile checkpoint does (here: create `marker`)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def write_malicious(path, marker, legacy=False):
    """A checkpoint that looks like a training checkpoint and whose unpickling creates `marker`."""
    torch.save({"epoch": 0, "state_dict": {"w": torch.zeros(2)}, "meta": {"note": Payload(marker)}}, path,
               _use_new_zipfile_serialization=not legacy)
    return str(path)


def write_truncated(path, source_path):
    """The first half of the file `source_path` (a download that was cut off)."""
    data = open(source_path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    return str(path)


def elsa_classifier_checkpoint(path, widths, arch="elsa_swin_tiny", num_classes=10):
    """A classification checkpoint of a small ELSA-Swin in our cls trainer's (timm) layout."""
    from localattn.models.elsa_swin import ELSASwinTransformer
    torch.manual_seed(0)
    model = ELSASwinTransformer(num_classes=num_classes, **widths)
    torch.save(dict(epoch=3, arch=arch, state_dict=model.state_dict(), num_classes=num_classes, version=2,
                    args=dict(model=arch, model_kwargs={k: list(v) if isinstance(v, tuple) else v
                                                        for k, v in widths.items()})), path)
    return str(path)


def run_tool(script, *args, timeout=300):
    """Run tools/<script> in a fresh interpreter; the CompletedProcess (stdout and stderr apart, text)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, os.path.join(TOOLS, script), *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def run_tool_here(script, *args, capsys, monkeypatch):
    """Run tools/<script> as `python tools/<script> ARGS` would, in this process (no interpreter start-up);
    returns (exit code, stderr)."""
    monkeypatch.syspath_prepend(TOOLS)
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", [os.path.join(TOOLS, script), *map(str, args)])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(os.path.join(TOOLS, script), run_name="__main__")
    code = exit_info.value.code
    err = capsys.readouterr().err
    return (code if isinstance(code, int) else 1 if code else 0), err


def error_line(stderr):
    """The one `PROG: error: ...` line of a tool's stderr (which also holds log lines), checking there is
    exactly one and no traceback."""
    lines = [line for line in stderr.splitlines() if ": error: " in line]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-4000:]
    return lines[0]
