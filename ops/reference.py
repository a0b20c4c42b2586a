"""Pure-PyTorch reference implementations of the ops (unfold-based, the definitions of the specs).

They are the test oracle and the fallback for devices with neither a C++ nor a Triton kernel. They
materialise a K²-times larger tensor, so they are slow and memory hungry by design.
Shapes and semantics: `shared/spec/elsa.md` §1 and `shared/spec/san.md` §1.
"""
import torch
import torch.nn.functional as F


def elsa(features, ghost_mul, ghost_add, h_attn, kernel_size, dilation=1, stride=1):
    """out[n,c,i,j] = Σ_k (M[n,c,k]·A[n,k,i,j] + D[n,c,k]) · X[n,c,(i,j)·s + off_k], zero borders.

    features (N,C,H,W); ghost_mul/ghost_add (N,C,K,K) or None; h_attn (N,K²,H//s,W//s).
    Returns (N,C,H//s,W//s).
    """
    n, c, h, w = features.shape
    k = kernel_size
    ho, wo = h // stride, w // stride
    hu, wu = -(-h // stride), -(-w // stride)  # positions F.unfold produces (ceil)
    cols = F.unfold(features, k, dilation=dilation, padding=(k - 1) // 2 * dilation, stride=stride)
    cols = cols.view(n, c, k * k, hu, wu)[..., :ho, :wo]
    filt = h_attn.unsqueeze(1)
    if ghost_mul is not None:
        filt = ghost_mul.reshape(n, c, k * k, 1, 1) * filt
    if ghost_add is not None:
        filt = filt + ghost_add.reshape(n, c, k * k, 1, 1)
    return (filt * cols).sum(2)


def output_size(size, kernel_size, stride, padding, dilation):
    """Convolution arithmetic used by the SAN ops: (size + 2p - d(k-1) - 1) // s + 1."""
    return (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def neighbours(x, kernel_size, stride, padding, dilation, pad_mode):
    """Unfolded neighbourhoods of x, (N, C, K², L), with zero or reflect padding."""
    n, c = x.shape[:2]
    if pad_mode == "reflect" and padding > 0:
        x = F.pad(x, [padding] * 4, mode="reflect")
        padding = 0
    cols = F.unfold(x, kernel_size, dilation=dilation, padding=padding, stride=stride)
    return cols.view(n, c, kernel_size * kernel_size, -1)


def aggregation(input, weight, kernel_size, stride=1, padding=0, dilation=1, pad_mode="reflect"):
    """Y[n,c,l] = Σ_t W[n, c mod C_w, t, l] · X~[n,c,neighbour t of l]; weight (N,C_w,K²,L)."""
    n, c, h, w = input.shape
    cw = weight.shape[1]
    ho = output_size(h, kernel_size, stride, padding, dilation)
    wo = output_size(w, kernel_size, stride, padding, dilation)
    cols = neighbours(input, kernel_size, stride, padding, dilation, pad_mode)
    cols = cols.view(n, c // cw, cw, kernel_size * kernel_size, ho * wo)
    return (cols * weight.unsqueeze(1)).sum(3).reshape(n, c, ho, wo)


def subtraction2(input1, input2, kernel_size, stride=1, padding=0, dilation=1, pad_mode="reflect"):
    """D[n,c,t,l] = X1[n,c,centre of l] − X~2[n,c,neighbour t of l]; (N,C,K²,L). Needs 2p = d(K−1)."""
    n, c = input1.shape[:2]
    centre = input1[:, :, ::stride, ::stride].reshape(n, c, 1, -1)
    return centre - neighbours(input2, kernel_size, stride, padding, dilation, pad_mode)


def subtraction(input, kernel_size, stride=1, padding=0, dilation=1, pad_mode="reflect"):
    """subtraction2(input, input, ...)."""
    return subtraction2(input, input, kernel_size, stride, padding, dilation, pad_mode)
