"""The SAN `nn.Module` wrappers: original constructor signature and pad_mode codes, no state."""
import pytest
import torch

import localattn.ops as L
from ops_cases import Case, ours


@pytest.mark.parametrize("code,name", [(0, "zero"), (1, "reflect"), ("zero", "zero"), ("reflect", "reflect")])
def test_pad_mode_codes(code, name):
    case = Case("aggregation", k=3, s=2, d=1, c=4, cw=2, h=7, w=6, pad_mode=name)
    x, weight = case.inputs(torch.float32)
    module = L.Aggregation(3, 2, 1, 1, code)
    assert module.pad_mode == name
    torch.testing.assert_close(module(x, weight), case(ours, x, weight), atol=0, rtol=0)


def test_subtraction_modules_match_functions():
    x, y = torch.randn(2, 3, 9, 8), torch.randn(2, 3, 9, 8)
    torch.testing.assert_close(L.Subtraction(5, 4, 4, 2, 1)(x), L.subtraction(x, 5, 4, 4, 2, "reflect"), atol=0, rtol=0)
    torch.testing.assert_close(L.Subtraction2(3, 1, 1, 1, 0)(x, y), L.subtraction2(x, y, 3, 1, 1, 1, "zero"),
                               atol=0, rtol=0)


def test_modules_hold_no_state_and_describe_themselves():
    for cls in (L.Aggregation, L.Subtraction, L.Subtraction2):
        module = cls(7, 1, 3, 1, 1)
        assert not list(module.parameters()) and not module.state_dict()
        assert "kernel_size=7, stride=1, padding=3, dilation=1, pad_mode='reflect'" in repr(module)


def test_public_api_keywords_and_defaults():
    x = torch.randn(1, 2, 5, 5)
    attn = torch.softmax(torch.randn(1, 9, 5, 5), 1)
    out = L.elsa(features=x, ghost_mul=None, ghost_add=None, h_attn=attn, kernel_size=3)
    assert out.shape == (1, 2, 5, 5)
    weight = torch.softmax(torch.randn(1, 1, 9, 9), 2)
    assert L.aggregation(input=x, weight=weight, kernel_size=3).shape == (1, 2, 3, 3)  # padding=0, reflect
    assert L.subtraction(input=x, kernel_size=1).shape == (1, 2, 1, 25)
    assert L.subtraction2(input1=x, input2=x, kernel_size=3, padding=1, pad_mode="zero").shape == (1, 2, 9, 25)
