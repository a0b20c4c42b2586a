"""Input builders shared by the ops tests: one `Case` per op configuration, able to make random
inputs and to call either implementation (`localattn.ops` or `localattn.ops.reference`)."""
from dataclasses import dataclass

import torch

import localattn.ops as ours
from localattn.ops import reference

FLOAT_TOL = 1e-5  # float32 vs reference (issue 2 §5)
LOW_PRECISION_TOL = {torch.float16: 1e-2, torch.bfloat16: 5e-2}  # vs a float32 reference


@dataclass(frozen=True)
class Case:
    """op in {'elsa', 'aggregation', 'subtraction', 'subtraction2'} with its window and shapes.

    ghost (ELSA): 'both' | 'mul' | 'add' | 'none'. padding None means the centred padding d(k-1)/2.
    """
    op: str
    k: int = 3
    s: int = 1
    d: int = 1
    n: int = 2
    c: int = 4
    h: int = 6
    w: int = 7
    cw: int = 2
    p: int | None = None
    pad_mode: str = "reflect"
    ghost: str = "both"

    @property
    def padding(self):
        return self.d * (self.k - 1) // 2 if self.p is None else self.p

    def out_hw(self):
        if self.op == "elsa":
            return self.h // self.s, self.w // self.s
        return tuple(reference.output_size(x, self.k, self.s, self.padding, self.d) for x in (self.h, self.w))

    def inputs(self, dtype=torch.float64, seed=0):
        """Random inputs (attention-like maps softmaxed, as in the models)."""
        g = torch.Generator().manual_seed(seed)

        def rand(*shape):
            return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)

        ho, wo = self.out_hw()
        x = rand(self.n, self.c, self.h, self.w)
        if self.op == "elsa":
            attn = torch.softmax(rand(self.n, self.k * self.k, ho, wo), 1)
            mul = rand(self.n, self.c, self.k, self.k) if self.ghost in ("both", "mul") else None
            add = rand(self.n, self.c, self.k, self.k) * 0.1 if self.ghost in ("both", "add") else None
            return x, mul, add, attn
        if self.op == "aggregation":
            return x, torch.softmax(rand(self.n, self.cw, self.k * self.k, ho * wo), 2)
        if self.op == "subtraction":
            return (x,)
        return x, rand(self.n, self.c, self.h, self.w)

    def __call__(self, module, *inputs):
        """Runs the op of `module` (localattn.ops or reference) on inputs."""
        window = (self.k, self.s, self.padding, self.d, self.pad_mode)
        if self.op == "elsa":
            return module.elsa(*inputs, self.k, self.d, self.s)
        return getattr(module, self.op)(*inputs, *window)


def differentiable(inputs):
    """Copies of the tensor inputs that require grad (None stays None)."""
    return tuple(t.detach().clone().requires_grad_() if t is not None else None for t in inputs)


def forward_backward(case, module, inputs, grad_seed=1, grad_dtype=None):
    """(output, grads of every tensor input) of `case` run by `module`, with a fixed random output
    gradient (rounded to `grad_dtype` first when given, so that a float32 reference can see the
    same gradient as a low-precision run)."""
    leaves = differentiable(inputs)
    out = case(module, *leaves)
    g = torch.Generator().manual_seed(grad_seed)
    grad = torch.randn(out.shape, generator=g, dtype=torch.float64).to(grad_dtype or out.dtype).to(out.dtype)
    out.backward(grad)
    return out.detach(), [t.grad if t is not None else None for t in leaves]


def max_error(actual, expected):
    """Largest |actual − expected| relative to max(1, max |expected|), in float64."""
    expected = expected.double()
    return ((actual.double() - expected).abs().max() / expected.abs().max().clamp(min=1)).item()

