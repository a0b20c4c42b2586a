"""float64 gradcheck of every op through the compiled CPU kernels (issue 2 §5): K ∈ {1,3,5,7},
stride ∈ {1,2}, dilation ∈ {1,2}, both pad modes, non-square inputs, and SAN's odd configuration
(k=5, s=4, d=2, p=4). Shapes are tiny because gradcheck is O(numel²); the fast mode (random
projections of the Jacobian) covers the full grid, the exact full-Jacobian mode a representative set."""
import itertools

import pytest
import torch

from ops_cases import Case, differentiable, ours

GRID = list(itertools.product((1, 3, 5, 7), (1, 2), (1, 2)))  # (k, stride, dilation)


def gradcheck(case, fast_mode=True, seed=0):
    inputs = differentiable(case.inputs(torch.float64, seed))
    present = [t for t in inputs if t is not None]

    def fn(*tensors):
        it = iter(tensors)
        return case(ours, *[next(it) if t is not None else None for t in inputs])

    assert torch.autograd.gradcheck(fn, present, fast_mode=fast_mode, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("k,s,d", GRID)
@pytest.mark.parametrize("ghost", ["both", "none"])
def test_elsa(k, s, d, ghost):
    gradcheck(Case("elsa", k=k, s=s, d=d, n=2, c=3, h=7, w=9, ghost=ghost))


@pytest.mark.parametrize("ghost", ["mul", "add"])
def test_elsa_single_ghost(ghost):
    gradcheck(Case("elsa", k=3, s=2, d=1, c=3, h=6, w=5, ghost=ghost))


@pytest.mark.parametrize("k,s,d", GRID)
@pytest.mark.parametrize("pad_mode", ["zero", "reflect"])
@pytest.mark.parametrize("op", ["aggregation", "subtraction", "subtraction2"])
def test_san(op, k, s, d, pad_mode):
    # Centred padding d(k-1)/2 as SAN uses it; reflect needs it below the size: 7x9 covers k=7, d=2.
    gradcheck(Case(op, k=k, s=s, d=d, n=1, c=4, cw=2, h=7, w=9, pad_mode=pad_mode))


@pytest.mark.parametrize("pad_mode", ["zero", "reflect"])
@pytest.mark.parametrize("p", [0, 1, 2])
def test_aggregation_other_padding(p, pad_mode):
    gradcheck(Case("aggregation", k=3, s=2, d=1, c=4, cw=4, h=5, w=8, p=p, pad_mode=pad_mode))


@pytest.mark.parametrize("pad_mode", ["zero", "reflect"])
@pytest.mark.parametrize("op", ["aggregation", "subtraction", "subtraction2"])
def test_san_odd_config_full_jacobian(op, pad_mode):
    """The original repo's own test configuration: k=5, s=4, d=2, p=4 on 9x9 / non-square inputs."""
    gradcheck(Case(op, k=5, s=4, d=2, p=4, n=1, c=4, cw=2, h=9, w=9, pad_mode=pad_mode), fast_mode=False)
    gradcheck(Case(op, k=5, s=4, d=2, p=4, n=1, c=2, cw=1, h=9, w=6, pad_mode=pad_mode), fast_mode=False)


@pytest.mark.parametrize("case", [
    Case("elsa", k=3, s=1, d=1, n=1, c=2, h=4, w=5),
    Case("elsa", k=5, s=2, d=2, n=1, c=2, h=5, w=6, ghost="add"),
    Case("aggregation", k=3, s=1, d=2, n=1, c=2, cw=1, h=4, w=5, pad_mode="reflect"),
    Case("subtraction2", k=3, s=2, d=1, n=1, c=2, h=4, w=5, pad_mode="zero"),
], ids=lambda c: f"{c.op}-k{c.k}s{c.s}d{c.d}")
def test_full_jacobian(case):
    gradcheck(case, fast_mode=False)
