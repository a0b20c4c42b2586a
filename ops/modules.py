"""Thin `nn.Module` wrappers of the SAN ops with the original constructor signature
`(kernel_size, stride, padding, dilation, pad_mode)`; pad_mode 0 / 1 (original codes) or
'zero' / 'reflect'. They hold no parameters or buffers (spec san.md §1)."""
from torch import nn

from . import _validate
from .functional import aggregation, subtraction, subtraction2


class _SanOp(nn.Module):
    def __init__(self, kernel_size, stride=1, padding=0, dilation=1, pad_mode="reflect"):
        super().__init__()
        op = type(self).__name__
        self.kernel_size = _validate.kernel_size(op, kernel_size)
        self.stride = _validate.integer(op, "stride", stride, 1)
        self.padding = _validate.integer(op, "padding", padding, 0)
        self.dilation = _validate.integer(op, "dilation", dilation, 1)
        self.pad_mode = "reflect" if _validate.pad_mode(op, pad_mode) else "zero"

    def _window(self):
        return self.kernel_size, self.stride, self.padding, self.dilation, self.pad_mode

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, pad_mode={self.pad_mode!r}")


class Aggregation(_SanOp):
    """forward(input (N,C,H,W), weight (N,C_w,K²,H_o·W_o)) -> (N,C,H_o,W_o); see `aggregation`."""

    def forward(self, input, weight):
        return aggregation(input, weight, *self._window())


class Subtraction(_SanOp):
    """forward(input (N,C,H,W)) -> (N,C,K²,H_o·W_o); see `subtraction`."""

    def forward(self, input):
        return subtraction(input, *self._window())


class Subtraction2(_SanOp):
    """forward(input1, input2 (N,C,H,W)) -> (N,C,K²,H_o·W_o); see `subtraction2`."""

    def forward(self, input1, input2):
        return subtraction2(input1, input2, *self._window())
