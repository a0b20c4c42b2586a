"""Shared constants and the tool runner of the segmentation tests (fixtures live in conftest.py)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEG_CONFIGS = os.path.join(ROOT, "configs", "seg")
NANO_CONFIG = os.path.join(SEG_CONFIGS, "synthetic", "upernet_elsa_nano_synthetic.py")
# the nano backbone of NANO_CONFIG
NANO_BACKBONE = dict(embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4), group_width=4)
NUM_CLASSES = 4


def run_tool(args, timeout=240, env=None):
    """Run `tools/<args[0]>` with the test interpreter from the repo root; return the completed process
    (stdout+stderr in `.stdout`), failing the test with the output when it exits non-zero."""
    tool = args[0]
    command = ([os.path.join(ROOT, "tools", tool)] if tool.endswith(".sh") else
               [sys.executable, os.path.join(ROOT, "tools", tool)]) + list(args[1:])
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable, **(env or {})}
    result = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=timeout, env=full_env)
    assert result.returncode == 0, f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-6000:]}"
    return result
