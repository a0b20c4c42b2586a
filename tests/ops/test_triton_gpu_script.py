"""benchmarks/gpu.py: its check functions, run on CPU through Triton's interpreter at tiny sizes (the
kernels via `localattn.ops.triton.KERNELS`), catch a wrong kernel, and the script refuses to run
without CUDA with one clear line."""
import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"

CHILD = f"""
import importlib.util, json, torch
spec = importlib.util.spec_from_file_location("gpu", {str(SCRIPT)!r})
gpu = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu)
from localattn.ops.triton import KERNELS

def call(op, *args):
    return KERNELS[op](*args)

def off_by_a_little(op, *args):
    out = KERNELS[op](*args)
    return out + 1e-3 if op == "aggregation" else out

cases = [gpu.CASES[0], gpu.CASES[3], gpu.CASES[6], gpu.CASES[9], gpu.CASES[12], gpu.CASES[15]]  # one per op
failures = gpu.run_checks(call, "cpu", cases, (torch.float32, torch.bfloat16), large=(600, 2, 8),
                          compile_backend="aot_eager")
broken = gpu.check_case(off_by_a_little, *gpu.CASES[6], torch.float32, "cpu")[0]
print(json.dumps(dict(failures=failures, broken_passes=broken)))
"""


def test_check_functions_pass_on_the_kernels_and_catch_a_wrong_one():
    env = dict(os.environ, TRITON_INTERPRET="1")
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "FAIL" not in done.stdout, done.stdout
    assert result == dict(failures=0, broken_passes=False), done.stdout
    for check in ("input elements", "bit-equal", "torch.compile(fullgraph=True)", "bfloat16"):
        assert check in done.stdout, check


def test_without_cuda_it_exits_with_one_clear_line():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "benchmarks/gpu.py needs a CUDA GPU: torch.cuda.is_available() is False on this machine "
        "(the Triton kernels are tested on CPU by tests/ops/test_triton*.py instead)"]
