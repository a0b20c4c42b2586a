"""Property-based forward parity on random shapes and windows (hypothesis, bounded examples)."""
import torch
from hypothesis import given, settings, strategies as st

from ops_cases import FLOAT_TOL, Case, ours, reference

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)


def check_forward(case):
    inputs = case.inputs(torch.float32, seed=7)
    torch.testing.assert_close(case(ours, *inputs), case(reference, *inputs), atol=FLOAT_TOL, rtol=0)


@SETTINGS
@given(k=st.sampled_from([1, 3, 5, 7]), s=st.integers(1, 3), d=st.integers(1, 3), n=st.integers(1, 2),
       c=st.integers(1, 5), h=st.integers(1, 12), w=st.integers(1, 12),
       ghost=st.sampled_from(["both", "mul", "add", "none"]))
def test_elsa_forward_parity(k, s, d, n, c, h, w, ghost):
    check_forward(Case("elsa", k=k, s=s, d=d, n=n, c=c, h=max(h, s), w=max(w, s), ghost=ghost))


@SETTINGS
@given(k=st.sampled_from([1, 3, 5, 7]), s=st.integers(1, 3), d=st.integers(1, 2), n=st.integers(1, 2),
       groups=st.integers(1, 3), cw=st.integers(1, 3), h=st.integers(1, 12), w=st.integers(1, 12),
       p=st.integers(0, 6), pad_mode=st.sampled_from(["zero", "reflect"]))
def test_aggregation_forward_parity(k, s, d, n, groups, cw, h, w, p, pad_mode):
    if pad_mode == "reflect":
        p = min(p, h - 1, w - 1)
    extent = d * (k - 1) + 1
    h, w = max(h, extent - 2 * p), max(w, extent - 2 * p)
    check_forward(Case("aggregation", k=k, s=s, d=d, n=n, c=groups * cw, cw=cw, h=h, w=w, p=p, pad_mode=pad_mode))


@SETTINGS
@given(k=st.sampled_from([1, 3, 5, 7]), s=st.integers(1, 4), d=st.integers(1, 2), n=st.integers(1, 2),
       c=st.integers(1, 4), h=st.integers(1, 12), w=st.integers(1, 12), pad_mode=st.sampled_from(["zero", "reflect"]),
       two_inputs=st.booleans())
def test_subtraction_forward_parity(k, s, d, n, c, h, w, pad_mode, two_inputs):
    p = d * (k - 1) // 2
    if pad_mode == "reflect":
        h, w = max(h, p + 1), max(w, p + 1)
    check_forward(Case("subtraction2" if two_inputs else "subtraction", k=k, s=s, d=d, n=n, c=c, h=h, w=w,
                       pad_mode=pad_mode))
