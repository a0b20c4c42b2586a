"""tools/export.py: misuse is one line and exit code 2, before any model is built."""
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "export.py"


@pytest.mark.parametrize("args, names", [
    (["no_such_model", "--format", "onnx"], "MODEL"),
    (["san10_pairwise", "--format", "onnx", "--shape", "100", "100"], "--shape"),
    (["san10_pairwise", "--format", "pt2", "--checkpoint", "missing.pth"], "--checkpoint"),
    (["san10_pairwise", "--format", "tflite"], "--format"),
])
def test_bad_arguments_exit_2_with_one_line(args, names, tmp_path):
    run = subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr and names in run.stderr.strip().splitlines()[-1]
