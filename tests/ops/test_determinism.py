"""Equal inputs give bit-equal outputs and gradients: on repeat, and with 1 or 2 threads (every
output element is owned by one task; reductions run in a fixed order)."""
import pytest
import torch

from ops_cases import Case, forward_backward, ours

CASES = [
    Case("elsa", k=7, n=4, c=16, h=20, w=18),
    Case("elsa", k=5, s=2, d=2, n=3, c=8, h=21, w=17, ghost="add"),
    Case("aggregation", k=7, n=2, c=32, cw=8, h=20, w=22, pad_mode="reflect"),
    Case("aggregation", k=5, s=4, d=2, p=4, n=2, c=16, cw=4, h=25, w=23, pad_mode="zero"),
    Case("subtraction2", k=7, n=2, c=16, h=18, w=20, pad_mode="reflect"),
    Case("subtraction", k=3, s=2, d=2, n=2, c=16, h=19, w=21, pad_mode="zero"),
]


def run_with_threads(case, inputs, threads):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return forward_backward(case, ours, inputs)
    finally:
        torch.set_num_threads(previous)


def assert_bit_equal(a, b):
    out_a, grads_a = a
    out_b, grads_b = b
    assert torch.equal(out_a, out_b)
    for x, y in zip(grads_a, grads_b):
        assert (x is None and y is None) or torch.equal(x, y)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.op}-k{c.k}s{c.s}d{c.d}")
def test_bit_equal_on_repeat_and_across_thread_counts(case):
    inputs = case.inputs(torch.float32)
    two = run_with_threads(case, inputs, 2)
    assert_bit_equal(two, run_with_threads(case, inputs, 2))
    assert_bit_equal(two, run_with_threads(case, inputs, 1))
