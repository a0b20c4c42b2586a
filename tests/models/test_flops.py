"""FLOP counting: our ops by formula, SAN paper table (spec san.md §4.3), ELSA-Swin-T estimate (elsa.md §3.4)."""
import importlib.util
from pathlib import Path

import pytest
import timm
import torch

import localattn.cls  # noqa: F401  (registers the timm models)
from localattn import ops
from localattn.flops import FlopCount, count_flops

TOOL = Path(__file__).resolve().parents[2] / "tools" / "analysis" / "get_flops.py"

SAN_TABLE_GMACS = {"san10_pairwise": 2.2, "san10_patchwise": 1.9, "san15_pairwise": 3.0,
                   "san15_patchwise": 2.6, "san19_pairwise": 3.8, "san19_patchwise": 3.3}


class LocalOps(torch.nn.Module):
    """subtraction2 + aggregation of SAN on a (1, 8, 6, 7) map, K = 3, C_w = 2."""

    def forward(self, x):
        relation = ops.subtraction2(x, x, 3, 1, 1, 1)
        return ops.aggregation(x, relation[:, :2], 3, 1, 1, 1)


def test_local_ops_counted_by_formula():
    result = count_flops(LocalOps(), (8, 6, 7))
    out = 8 * 6 * 7
    assert result.macs == out * 9 + out * 9  # aggregation: out·K²; subtraction2: its output numel (C·K²·L)
    assert result.by_op() == {"localattn.aggregation": out * 9, "localattn.subtraction2": out * 9}


def test_dispatcher_ops_and_their_backward_counted_by_formula():
    x = torch.randn(1, 8, 6, 7, requires_grad=True)
    weight = torch.randn(1, 2, 9, 42, requires_grad=True)
    counter = FlopCount()
    with counter.mode:
        out = torch.ops.localattn.aggregation(x, weight, 3, 1, 1, 1, True)
        relation = torch.ops.localattn.subtraction2(x, x, 3, 1, 1, 1, True)
        (out.sum() + relation.sum()).backward()
    macs = 8 * 6 * 7 * 9  # aggregation out·K² = subtraction2 output numel
    assert counter.by_op() == {"localattn.aggregation": macs, "localattn.subtraction2": macs,
                               "localattn.aggregation_backward": 2 * macs, "localattn.subtraction2_backward": 2 * macs}


@pytest.mark.parametrize("name", list(SAN_TABLE_GMACS))
def test_san_flops_match_paper_table(name):
    with torch.device("meta"):
        model = timm.create_model(name)
    gmacs = count_flops(model).complexity_macs / 1e9
    assert abs(gmacs - SAN_TABLE_GMACS[name]) <= 0.05 * SAN_TABLE_GMACS[name]


def test_elsa_swin_tiny_flops_match_estimate():
    result = count_flops(timm.create_model("elsa_swin_tiny"), device="meta")
    assert abs(result.macs / 1e9 - 4.70) <= 0.05 * 4.70
    assert result.by_op()["localattn.elsa_attention"] > 0  # the fused op the ELSA layer runs


def test_get_flops_tool_prints_table(capsys):
    spec = importlib.util.spec_from_file_location("get_flops", TOOL)
    get_flops = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(get_flops)
    rows = get_flops.main(["san10_patchwise", "--shape", "128", "160"])
    printed = capsys.readouterr().out
    assert "GMACs (SAN rules)" in printed and "san10_patchwise" in printed
    with torch.device("meta"):
        expected = count_flops(timm.create_model("san10_patchwise"), (3, 128, 160))
    assert rows == [("san10_patchwise", "128x160", "11.841", f"{expected.macs / 1e9:.3f}",
                     f"{expected.complexity_macs / 1e9:.3f}")]
