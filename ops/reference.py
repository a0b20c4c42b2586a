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


def elsa_attention(logits, values, ghost_mul, ghost_add, kernel_size, dilation=1, stride=1):
    """Fused ELSA attention (`torch.ops.localattn.elsa_attention`) on channels-last tensors:

        A[b,i,j,g,k]   = softmax over k of logits[b, i, j, g·K² + k]        (all K² taps, borders included)
        out[b,i,j,g·C+c] = Σ_k (M[g·C+c, k]·A[b,i,j,g,k] + D[g·C+c, k]) · X[b, i·s + (ky−r)·d, j·s + (kx−r)·d, g·C+c]

    logits (B, H//s, W//s, G·K²): the pre-softmax output of ELSA's `attn`, head-major (channel g·K² + k,
    k = ky·K + kx); values X (B, H, W, G·C), head-major channels; ghost_mul M / ghost_add D (G·C, K, K)
    or None (all ones / all zeros), shared by the batch. Zero borders, no renormalisation (spec elsa.md
    §1.3); K odd, r = (K−1)/2. Computed in float32 or wider (float64 stays float64), returned in the
    dtype of `values`: (B, H//s, W//s, G·C), ready for `post_proj`.
    Equals `elsa` (official layout) on (B·G, C, H, W) values and (B·G, K², H//s, W//s) softmaxed maps.
    """
    b, ho, wo, gk = logits.shape
    _, h, w, cv = values.shape
    k2 = kernel_size * kernel_size
    heads = gk // k2
    acc = torch.promote_types(values.dtype, torch.float32)
    attn = logits.to(acc).view(b, ho, wo, heads, k2).softmax(-1).permute(0, 3, 4, 1, 2)
    x = values.to(acc).permute(0, 3, 1, 2).reshape(b * heads, cv // heads, h, w)

    def per_sample(ghost):
        return None if ghost is None else ghost.to(acc).expand(b, -1, -1, -1).reshape(b * heads, cv // heads,
                                                                                        kernel_size, kernel_size)

    out = elsa(x, per_sample(ghost_mul), per_sample(ghost_add), attn.reshape(b * heads, k2, ho, wo),
               kernel_size, dilation, stride)
    return out.view(b, cv, ho, wo).permute(0, 2, 3, 1).to(values.dtype)


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


def san_pairwise(x1, x2, position, value, scale0, shift0, weight2, shift2, weight5, bias5, kernel_size,
                 dilation=1):
    """Fused SAN pairwise attention (`torch.ops.localattn.san_pairwise`): SAM's pairwise weight branch
    with its BatchNorms as affine maps (running statistics, spec san.md §2.4) and the aggregation:

        F_c[c,l] = x1[n,c,l] (c < R) | position[c−R, l];   F_n[c,t,l] = the same with x2 at neighbour t of l
        u[c,t,l] = relu(scale0[c]·(F_c[c,l] − F_n[c,t,l]) + shift0[c])                 c < R+2
        v[m,t,l] = relu(Σ_c weight2[m,c]·u[c,t,l] + shift2[m]);   z[j,t,l] = Σ_m weight5[j,m]·v[m,t,l] + bias5[j]
        out[n,c,l] = Σ_t softmax_t(z)[c mod C_w, t, l] · value~[n,c, neighbour t of l]

    x1, x2 (N, R, H, W) = conv1/conv2 outputs; position (2, H, W) = conv_p of the position map; value
    (N, C, H, W) = conv3 output; scale0/shift0 (R+2,) = conv_w.0; weight2 (M, R+2), shift2 (M,) =
    conv_w.2 with conv_w.3 folded in; weight5 (C_w, M), bias5 (C_w,) = conv_w.5; C_w divides C.
    Neighbour t = (a, b) of l = (h, w) is (h + (a − r)·d, w + (b − r)·d) reflected at the borders,
    r = (K−1)/2; stride 1. Computed in float32 or wider, returned as (N, C, H, W) in value's dtype.
    """
    n, rel, h, w = x1.shape
    acc = torch.promote_types(value.dtype, torch.float32)
    k, pad = kernel_size, dilation * (kernel_size - 1) // 2
    args = (k, 1, pad, dilation, "reflect")
    relation = subtraction2(x1.to(acc), x2.to(acc), *args)
    position_diff = subtraction(position.to(acc).unsqueeze(0), *args).expand(n, -1, -1, -1)
    features = torch.cat([relation, position_diff], 1)
    u = torch.relu(features * scale0.to(acc)[:, None, None] + shift0.to(acc)[:, None, None])
    v = torch.relu(torch.einsum("mc,nctl->nmtl", weight2.to(acc), u) + shift2.to(acc)[:, None, None])
    z = torch.einsum("jm,nmtl->njtl", weight5.to(acc), v) + bias5.to(acc)[:, None, None]
    return aggregation(value.to(acc), z.softmax(2), *args).to(value.dtype)


def san_patchwise(hidden, value, weight5, bias5, kernel_size, dilation=1):
    """Fused SAN patchwise attention (`torch.ops.localattn.san_patchwise`): the last 1×1 layer of SAM's
    patchwise weight branch (conv_w.5) and the aggregation, spec san.md §2.4 (patchwise steps 4-6):

        z[n,j,l] = Σ_m weight5[j,m]·hidden[n,m,l] + bias5[j]        j = w·K² + t  (w < C_w, t < K²)
        out[n,c,l] = Σ_t z[n, (c mod C_w)·K² + t, l] · value~[n,c, neighbour t of l]

    hidden (N, M, H, W) = the weight branch before conv_w.5 (after its last ReLU); value (N, C, H, W) =
    conv3 output; weight5 (C_w·K², M), bias5 (C_w·K²,) = conv_w.5; C_w divides C. No softmax (patchwise
    weights are used as they come). Neighbour t = (a, b) of l = (h, w) is (h + (a − r)·d, w + (b − r)·d)
    reflected at the borders, r = (K−1)/2; stride 1. Computed in float32 or wider, returned as
    (N, C, H, W) in value's dtype.
    """
    n, _, h, w = hidden.shape
    acc = torch.promote_types(value.dtype, torch.float32)
    k, pad = kernel_size, dilation * (kernel_size - 1) // 2
    z = torch.einsum("jm,nml->njl", weight5.to(acc), hidden.to(acc).flatten(2)) + bias5.to(acc)[:, None]
    return aggregation(value.to(acc), z.view(n, -1, k * k, h * w), k, 1, pad, dilation, "reflect").to(value.dtype)
