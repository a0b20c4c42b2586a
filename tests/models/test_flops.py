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


# mmengine's jit counter (`get_model_complexity_info`, mmdet/mmseg get_flops.py) with our handles
# (registered by `import localattn.mm`): its own norm / pool terms, which our `macs` leaves out.
MMENGINE_NORM_POOL = ("batch_norm", "layer_norm", "adaptive_avg_pool2d")


def _mmengine_flops(model, grad=True, complexity_info=False):
    """(total, per-operator counts) of mmengine's FlopAnalyzer on `model` at 224, eval; with `complexity_info`
    the total is `get_model_complexity_info`'s (what get_flops.py prints), checked against the analyzer's."""
    import localattn.mm  # noqa: F401  (registers the handles)
    from mmengine.analysis import FlopAnalyzer, get_model_complexity_info

    torch.manual_seed(0)
    x = torch.randn(1, 3, 224, 224)
    with torch.set_grad_enabled(grad):
        analyzer = FlopAnalyzer(model.eval(), (x,)).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        by_op = analyzer.by_operator()
        if complexity_info:
            info = get_model_complexity_info(model, inputs=(x,), show_table=False, show_arch=False)
            assert info["flops"] == analyzer.total()
    assert analyzer.total() == sum(by_op.values())
    return analyzer.total(), by_op


@pytest.mark.parametrize("name", ["san10_pairwise", "san10_patchwise", "elsa_swin_tiny", "xresnet50_ssa"])
def test_mmengine_counter_equals_our_macs(name):
    """mmengine total = our `macs` + mmengine's batch_norm / layer_norm / adaptive_avg_pool2d terms, exactly;
    our ops and SAN's baddbmm (1x1 convs) are counted by our formulas, op by op."""
    ours = count_flops(timm.create_model(name), device="meta")
    total, by_op = _mmengine_flops(timm.create_model(name), complexity_info=name == "san10_pairwise")
    assert total - sum(by_op[op] for op in MMENGINE_NORM_POOL) == ours.macs
    our_ops = sum(v for op, v in ours.by_op().items() if op.startswith("localattn."))
    assert sum(by_op[op] for op in ("aggregation", "subtraction2", "elsa", "elsa_attention")) == our_ops
    assert by_op["baddbmm"] == ours.by_op().get("aten.baddbmm", 0)
    if name.startswith("san"):  # batch_norm 2·numel (eval) as SAN's rules; their ReLU, max-pool, conv bias are not
        assert by_op["batch_norm"] == ours.by_op()["aten._native_batch_norm_legit_no_training"]
        assert abs(total / 1e9 - SAN_TABLE_GMACS[name]) <= 0.05 * SAN_TABLE_GMACS[name]
    if name == "san10_pairwise":  # the 2.05 G (mmengine reported 0.816 G without our handles)
        assert round(ours.macs / 1e9, 2) == 2.05


@pytest.mark.parametrize("name", ["san10_pairwise", "san10_patchwise"])
def test_mmengine_counter_on_san_inference_path(name):
    """Under no_grad SAN runs its inference rewrites (fused `san_pairwise`, folded BatchNorms; a jit trace of
    patchwise records its published graph): the same MACs, only the folded batch_norm terms are gone."""
    ours = count_flops(timm.create_model(name), device="meta")
    total, by_op = _mmengine_flops(timm.create_model(name), grad=False)
    assert ("san_pairwise" in by_op) == (name == "san10_pairwise")
    assert total - sum(by_op[op] for op in MMENGINE_NORM_POOL) == ours.macs
    assert by_op["batch_norm"] < ours.by_op()["aten._native_batch_norm_legit_no_training"]


def test_dispatcher_san_pairwise_counted_as_unfused_graph():
    from localattn.flops import san_pairwise_macs

    n, rel, c, cw, hidden, k, h, w = 2, 4, 16, 2, 3, 3, 5, 6
    args = [torch.randn(n, rel, h, w), torch.randn(n, rel, h, w), torch.randn(2, h, w), torch.randn(n, c, h, w),
            torch.rand(rel + 2), torch.randn(rel + 2), torch.randn(hidden, rel + 2), torch.randn(hidden),
            torch.randn(cw, hidden), torch.randn(cw)]
    counter = FlopCount()
    with counter.mode:
        torch.ops.localattn.san_pairwise(*args, k, 1)
    taps = k * k * h * w  # subtraction2 + position subtraction + conv_w.2 + conv_w.5 + aggregation
    expected = n * rel * taps + 2 * taps + n * hidden * (rel + 2) * taps + n * cw * hidden * taps + n * c * taps
    assert san_pairwise_macs((n, rel, h, w), (n, c, h, w), (hidden, rel + 2), (cw, hidden), k) == expected
    assert counter.by_op() == {"localattn.san_pairwise": expected}


def test_dispatcher_san_patchwise_counted_as_unfused_graph():
    from localattn.flops import san_patchwise_macs

    n, hidden, cw, c, k, h, w = 2, 3, 2, 8, 3, 5, 6
    args = [torch.randn(n, hidden, h, w), torch.randn(n, c, h, w), torch.randn(cw * k * k, hidden),
            torch.randn(cw * k * k)]
    counter = FlopCount()
    with counter.mode:
        torch.ops.localattn.san_patchwise(*args, k, 1)
    expected = n * h * w * cw * k * k * hidden + n * c * h * w * k * k  # conv_w.5 + aggregation
    assert san_patchwise_macs((n, hidden, h, w), (n, c, h, w), (cw * k * k, hidden), k) == expected
    assert counter.by_op() == {"localattn.san_patchwise": expected}
