"""Launch configuration of the Triton kernels (no GPU, nothing runs): grids within CUDA's limits for any
N·C, the strip tiling the interpreter cases of test_triton.py rely on."""

import pytest
import torch

from localattn.ops.triton import aggregation, elsa, elsa_attention, subtraction

GRID_LIMITS = (2**31 - 1, 65535, 65535)  # CUDA: x, y, z


def _zeros(*shape):
    return torch.zeros(shape)


@pytest.mark.parametrize("batch,channels", [(1, 2**21), (2**21, 1)], ids=["many_channels", "many_samples"])
def test_every_grid_is_within_cuda_limits(launches, batch, channels):
    n, c = batch, channels
    x = _zeros(n, c, 2, 2)
    elsa.elsa_backward(_zeros(n, c, 2, 2), x, _zeros(n, c, 1, 1), _zeros(n, c, 1, 1), _zeros(n, 1, 2, 2), 1, 1, 1)
    aggregation.aggregation_backward(_zeros(n, c, 2, 2), x, _zeros(n, 1, 9, 4), 3, 1, 1, 1, True)
    subtraction.subtraction2_backward(_zeros(n, c, 9, 4), 2, 2, 3, 1, 1, 1, True)
    assert launches
    for name, grid in launches:
        assert all(size <= limit for size, limit in zip(grid, GRID_LIMITS)), (name, grid)


@pytest.mark.parametrize("module,shape,kernel_size,stride", [
    (elsa, (1, 3, 40, 8), 3, 1), (elsa, (1, 2, 70, 16), 3, 2),
    (aggregation, (1, 4, 40, 8), 3, 1), (aggregation, (1, 2, 70, 16), 3, 2),
    (subtraction, (1, 2, 40, 8), 3, 1), (subtraction, (1, 2, 70, 16), 3, 2),
], ids=lambda v: getattr(v, "__name__", str(v)))
def test_strip_cases_of_the_interpreter_test_have_several_strips(module, shape, kernel_size, stride):
    n, c, h, w = shape
    if module is elsa:
        t = elsa._tiling(torch.empty(shape, device="meta"), kernel_size, 1, stride)
    elif module is aggregation:
        t = aggregation._tiling(torch.empty(shape, device="meta"), kernel_size, stride, 1, 1, False)
    else:
        t = subtraction._tiling(n, h, w, kernel_size, stride, 1, 1, False)
    assert t.strips >= 2 and t.grid == (n * t.strips,)


def test_fused_strip_cases_have_several_strips():
    for b, g, c, h, w, s in [(1, 2, 2, 40, 8, 1), (1, 1, 3, 70, 16, 2)]:
        logits = torch.empty(b, h // s, w // s, g * 9, device="meta")
        t, *_ = elsa_attention._tiling(logits, torch.empty(b, h, w, g * c, device="meta"), 3, 1, s)
        assert t.strips >= 2


def test_mixed_dtypes_get_an_error_naming_the_op():
    x = torch.zeros(1, 2, 3, 3)
    with pytest.raises(TypeError, match="localattn::aggregation: all tensors must share one dtype"):
        aggregation.aggregation(x, torch.zeros(1, 2, 9, 9, dtype=torch.float16), 3, 1, 1, 1, False)
