"""benchmarks/roofline.py: the memory-roofline table of the Triton kernels, run on CPU (no GPU needed).

Every op must move at most 1.5× its ideal bytes (issue 10 §4); the launches it models are the launches
the launchers make (same grids, recorded from real calls at small shapes)."""
import subprocess
import sys
from pathlib import Path

import torch

import localattn.ops.triton as package

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import roofline  # noqa: E402

OPS = ("elsa", "elsa_backward", "elsa_attention", "elsa_attention_backward", "aggregation",
       "aggregation_backward", "subtraction2", "subtraction2_backward", "san_pairwise", "san_patchwise")


def run(*args):
    return subprocess.run([sys.executable, str(BENCHMARKS / "roofline.py"), *args], capture_output=True, text=True,
                          timeout=300)


def test_every_kernel_moves_at_most_1_5x_its_ideal_bytes_at_batch_8_and_128(capsys):
    # the script's main() in this process (the exit status of a real run is the next test's)
    code = roofline.main(["--max-ratio", "1.5"])
    done = capsys.readouterr()
    assert code == 0, done.out + done.err
    rows = [line.split("|")[1:-1] for line in done.out.splitlines() if line.startswith("| ") and "MB" not in line]
    assert {row[0].strip() for row in rows} == set(OPS)
    assert {row[2].strip() for row in rows} == {"8", "128"}
    # x 2 batches: ELSA stage 1 and 3 x (elsa, fused elsa_attention) x fwd/bwd, SAN10's 5 stages x
    # (aggregation fwd/bwd, fused san_pairwise, fused san_patchwise), subtraction2 fwd/bwd
    assert len(rows) == 2 * (2 * 2 * 2 + 5 * 4 + 2)
    assert all(1.0 <= float(row[-1]) <= 1.5 for row in rows), done.out


def test_max_ratio_below_a_kernel_ratio_fails():
    done = run("--max-ratio", "1.0", "--batch-sizes", "8")
    assert done.returncode == 1
    assert "FAIL: a kernel moves more than --max-ratio 1.0" in done.stderr


def test_modelled_grids_are_the_grids_the_launchers_launch(launches):
    small = dict(n=16, c=4, h=12, k=7, cw=2)  # batch 2 of benchmarks/ops.py's batch 8: N = 4
    for op in roofline.MODELLED:
        for plan in roofline.op_plans(op, small, 2):
            label, _, args, _ = plan
            real = tuple(torch.zeros(a.shape) if isinstance(a, torch.Tensor) else a for a in args)
            launches.clear()
            package.KERNELS[label](*real)
            assert [grid for _, grid in launches] == [launch.grid for launch in roofline.launches(plan)], label
