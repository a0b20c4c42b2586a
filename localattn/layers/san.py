"""SAN self-attention module (`SAM`, pairwise and patchwise) and its pre-activation `Bottleneck`.

Exactly the modules of `hszhao/SAN` (spec `san.md` §2.3–§2.4): same submodule names and shapes, so
official state dicts load unchanged; reflection padding everywhere; attention weights shared across
channels as `c mod C_w`. The local ops are looked up on `localattn.ops` at call time, so the compiled
kernels (or the reference, when patched in) are used without rebuilding the model.
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath

from localattn import ops
from localattn.ops._library import has_kernel
from localattn.viz.capture import AttentionProbe

SA_TYPES = {"pairwise": 0, "patchwise": 1, 0: 0, 1: 1}
PATCH_CHUNK_BYTES = 16 << 20  # patchwise inference: the window's features at once up to this size, else per row


def sa_type_id(sa_type):
    """0 for pairwise, 1 for patchwise; accepts the names or the original integer codes."""
    if sa_type not in SA_TYPES:
        raise ValueError(f"sa_type must be 'pairwise' (0) or 'patchwise' (1), got {sa_type!r}")
    return SA_TYPES[sa_type]


def symmetric_linspace(steps: int, device: torch.device, dtype: torch.dtype):
    """`torch.linspace(-1, 1, steps)` from `arange` (ATen's formula: from -1 up to the middle, from 1 down
    after it; equal up to rounding, which for linspace itself depends on the CPU's vector width):
    `torch.linspace` specialises a symbolic `steps`, this keeps it dynamic under `torch.export` / tracing."""
    i = torch.arange(steps, device=device, dtype=dtype)
    step = 2.0 / max(steps - 1, 1)
    return torch.where(2 * i < steps, i * step - 1.0, 1.0 - (steps - 1 - i) * step)


def position_map(height: int, width: int, device: torch.device, dtype: torch.dtype):
    """(1, 2, H, W) grid: channel 0 = linspace(-1, 1, W) along columns, channel 1 = linspace(-1, 1, H) along rows."""
    xs = symmetric_linspace(width, device, dtype).view(1, width).expand(height, width)
    ys = symmetric_linspace(height, device, dtype).view(height, 1).expand(height, width)
    return torch.stack([xs, ys]).unsqueeze(0)


def inference_fast_path():
    """True when autograd is off (`torch.no_grad` / `torch.inference_mode`): the inference-only rewrites
    below (BatchNorm folding, the 2x2 max-pool) may run. With autograd on they stay off, so training and
    FLOP counting see the published layer graph; both give the same outputs up to rounding."""
    return not torch.is_grad_enabled()


@torch.jit.unused
def fx_tracing() -> bool:
    """True while torch.fx traces symbolically: shapes are proxies, so the published graph is traced."""
    return torch.fx._symbolic_trace.is_fx_symbolic_tracing()


def uses_running_stats(bn):
    """True when `bn` normalises with its running statistics (eval mode), i.e. is a fixed affine map."""
    return not bn.training and bn.running_var is not None


def batchnorm_affine(bn):
    """(scale, shift) with bn(x) == x * scale + shift per channel, for a BatchNorm in inference mode."""
    scale = bn.running_var.add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    return scale, shift if bn.bias is None else shift + bn.bias


def cpu_vendor() -> str:
    """The CPU's vendor id ('GenuineIntel', 'AuthenticAMD', ...) from /proc/cpuinfo; '' where unknown."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def onednn_1x1_outruns_mkl(cpu_capability: str, vendor: str) -> bool:
    """Whether oneDNN's 1x1 convolution beats MKL's sgemm (`torch.bmm` on CPU) on this CPU kind. MKL runs its
    AVX-512 kernels on Intel CPUs only: on 2 cores of an AMD EPYC its sgemm reaches 180-190 GFLOP/s, oneDNN's 1x1
    convolution 300-350; on an Intel Xeon the per-image GEMMs are as fast or faster at SAN10's shapes
    (`benchmarks/pointwise.py` on each kind)."""
    return cpu_capability.startswith("AVX512") and vendor == "AuthenticAMD"


ONEDNN_1X1_OUTRUNS_MKL = onednn_1x1_outruns_mkl(torch.backends.cpu.get_cpu_capability(), cpu_vendor())
ONEDNN_MAX_PIXELS, ONEDNN_MIN_IN_CHANNELS, ONEDNN_MIN_OUT_CHANNELS = 28 * 28, 128, 32


@torch.jit.unused
def onednn_is_faster(x, out_channels: int) -> bool:
    """True where a 1x1 convolution of the (N, C, H, W) batch x runs faster as oneDNN's convolution than as one
    GEMM per image: eager float32 / half on an AMD AVX-512 CPU (`onednn_1x1_outruns_mkl`), a batch of small deep
    maps (H·W ≤ 28², ≥ 128 input and ≥ 32 output channels), whose per-image GEMMs are short (`benchmarks/pointwise.py`: 1.3-2.2x forward,
    1.1-3.3x forward + backward at SAN10's batch-8 shapes). Tracing, export and torch.compile keep the batched
    matmul (one graph for every shape); at batch 1 the two are equal (both bound by reading the weights)."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or fx_tracing():
        return False
    n, c, h, w = x.shape
    return (ONEDNN_1X1_OUTRUNS_MKL and x.device.type == "cpu" and x.dtype != torch.float64 and n > 1
            and h * w <= ONEDNN_MAX_PIXELS and c >= ONEDNN_MIN_IN_CHANNELS and out_channels >= ONEDNN_MIN_OUT_CHANNELS)


def pointwise_conv2d(x, weight, bias: Optional[torch.Tensor] = None):
    """1x1 convolution (stride 1, no groups) of an (N, C, H, W) map as one batched matmul, or as oneDNN's
    convolution where that is faster (`onednn_is_faster`)."""
    out_channels, in_channels = weight.shape[0], weight.shape[1]
    if x.dim() != 4 or x.shape[1] != in_channels:
        raise ValueError(f"expected input (N, {in_channels}, H, W), got {list(x.shape)}")
    if not torch.jit.is_scripting() and onednn_is_faster(x, out_channels):
        return F.conv2d(x, weight.reshape(out_channels, in_channels, 1, 1), bias)
    n, c, h, w = x.shape
    weight, x = weight.view(1, out_channels, c).expand(n, -1, -1), x.reshape(n, c, h * w)
    out = torch.bmm(weight, x) if bias is None else torch.baddbmm(bias.view(1, -1, 1), weight, x)
    return out.view(n, out_channels, h, w)


class PointwiseConv2d(nn.Conv2d):
    """1x1 Conv2d (stride 1, no groups) computed by `pointwise_conv2d`: the same parameters and state-dict entries
    as `nn.Conv2d`, but a batched matmul where that is faster on CPU (2-4x for SAN's few channels on huge maps)."""

    def __init__(self, in_channels, out_channels, bias=True):
        super().__init__(in_channels, out_channels, kernel_size=1, bias=bias)

    def forward(self, x):
        return pointwise_conv2d(x, self.weight, self.bias)


def folded_pointwise_bn(conv, bn):
    """(weight, bias) of the 1x1 convolution equal to bn(conv(x)), for a BatchNorm in inference mode."""
    scale, shift = batchnorm_affine(bn)
    bias = shift if conv.bias is None else torch.addcmul(shift, conv.bias, scale)
    return conv.weight * scale[:, None, None, None], bias


def max_pool_2x2_pairs(x):
    """2x2 max-pool of an (N, C, H, W) map with even H and W: the elementwise maximum of row pairs, then of
    column pairs (bit-equal to max_pool2d)."""
    n, c, h, w = x.shape
    rows = x.reshape(n, c, h // 2, 2, w)
    rows = torch.maximum(rows[:, :, :, 0], rows[:, :, :, 1]).view(n, c, h // 2, w // 2, 2)
    return torch.maximum(rows[..., 0], rows[..., 1])


class MaxPool2x2(nn.MaxPool2d):
    """`nn.MaxPool2d(2, 2)` with a faster CPU inference path: `max_pool_2x2_pairs` (bit-equal, 4-5x faster than
    the CPU max_pool2d kernel on SAN's large NCHW maps), where `inference_fast_path()`; otherwise, or for odd
    sizes, plain max_pool2d."""

    def __init__(self):
        super().__init__(kernel_size=2, stride=2)

    def forward(self, x):
        even_map = x.dim() == 4 and x.shape[-2] % 2 == 0 and x.shape[-1] % 2 == 0
        if not (inference_fast_path() and x.device.type == "cpu" and even_map):
            return F.max_pool2d(x, 2, 2)
        return max_pool_2x2_pairs(x)


POOLED_BAND_BYTES = 1 << 20  # `pointwise_conv_bn_relu_pool`: full-resolution rows computed this much at a time
SLOTTED_BAND_BYTES = 8 << 20  # the same in training (more passes per band: fewer, larger bands)


def max_pool_2x2_slots(x):
    """(maximum, slot) of each 2x2 window of an (N, C, H, W) map with even H and W: slot 0..3 (int8) in row-major
    window order, the first maximum, as max_pool2d's indices."""
    n, c, h, w = x.shape
    rows = x.view(n, c, h // 2, 2, w // 2, 2)
    top, bottom = rows[:, :, :, 0], rows[:, :, :, 1]
    top_right, bottom_right = top[..., 1] > top[..., 0], bottom[..., 1] > bottom[..., 0]
    top_max, bottom_max = top.amax(-1), bottom.amax(-1)
    lower = bottom_max > top_max
    slot = torch.where(lower, bottom_right.to(torch.int8) + 2, top_right.to(torch.int8))
    return torch.maximum(top_max, bottom_max), slot


def pooled_pointwise_bands(weight, x, with_slots=False):
    """max_pool2d(2x2) of the 1x1 convolution `weight` (out, in) of x (N, in, H, W), H and W cropped to even, with
    only bands of about POOLED_BAND_BYTES (with `with_slots`: SLOTTED_BAND_BYTES) of full-resolution rows (across
    the batch) in memory at a time: the pooled map, and with `with_slots` the window slots of the maxima
    (`max_pool_2x2_slots`)."""
    n, c, h, w = x.shape
    h, w = h // 2 * 2, w // 2 * 2
    weight = weight.expand(n, -1, -1)
    band_bytes = SLOTTED_BAND_BYTES if with_slots else POOLED_BAND_BYTES
    band = max(2, band_bytes // (n * weight.shape[1] * w * x.element_size()) // 2 * 2)
    pooled = slots = None
    for row in range(0, h, band):
        rows = min(band, h - row)
        full = torch.bmm(weight, x[:, :, row:row + rows, :w].reshape(n, c, rows * w)).view(n, -1, rows, w)
        band_pooled, band_slots = max_pool_2x2_slots(full) if with_slots else (max_pool_2x2_pairs(full), None)
        if pooled is None:  # in the matmul's dtype (autocast's, under autocast)
            pooled = band_pooled.new_empty(n, band_pooled.shape[1], h // 2, w // 2)
            slots = None if band_slots is None else band_slots.new_empty(pooled.shape)
        pooled[:, :, row // 2:(row + rows) // 2] = band_pooled  # copied while in cache
        if slots is not None:
            slots[:, :, row // 2:(row + rows) // 2] = band_slots
    return pooled, slots


class PooledStemTraining(torch.autograd.Function):
    """pool(relu(bn(conv(x)))) for a bias-free 1x1 conv and a BatchNorm2d with batch statistics (training), without
    the full-resolution map: the statistics of conv(x) follow from x's first and second moments (x has few
    channels), so the batch-statistics BatchNorm folds into the conv as at inference (`pooled_pointwise_bands`),
    and the backward needs only the pooled gradient at each window's maximum (its slot) and the same moments.

    forward(x, weight (out, in), gamma, beta, eps) -> (pooled map, batch mean, biased batch variance); gradients
    for weight, gamma and beta (x takes none: the input image)."""

    @staticmethod
    def forward(ctx, x, weight, gamma, beta, eps):
        n, c, h, w = x.shape
        count = n * h * w
        flat = x.double().transpose(0, 1).reshape(c, count)
        sum_x = flat.sum(1)  # Σ x and Σ x xᵀ over the pixels, as reductions (a fixed order, like BatchNorm's)
        gram = torch.stack([(flat * flat[i]).sum(1) for i in range(c)])
        weight64 = weight.double()
        mean = weight64 @ (sum_x / count)
        var = ((weight64 @ (gram / count)) * weight64).sum(1) - mean * mean
        inv_std = (var.clamp_min(0) + eps).rsqrt()
        scale = inv_std if gamma is None else gamma.double() * inv_std
        shift = -mean * scale if beta is None else beta.double() - mean * scale
        pooled, slots = pooled_pointwise_bands((weight64 * scale[:, None]).to(x.dtype), x, with_slots=True)
        out = torch.relu_(pooled.add_(shift.to(x.dtype).view(-1, 1, 1)))
        slots.masked_fill_(out == 0, -1)  # no gradient where the ReLU is off
        ctx.save_for_backward(x, weight64, gamma, slots, sum_x, gram, mean, inv_std)
        ctx.beta_is_none = beta is None
        batch_mean, batch_var = mean.to(x.dtype), var.to(x.dtype)
        ctx.mark_non_differentiable(batch_mean, batch_var)
        return out, batch_mean, batch_var

    @staticmethod
    def backward(ctx, grad, grad_mean, grad_var):
        x, weight, gamma, slots, sum_x, gram, mean, inv_std = ctx.saved_tensors
        n, c, h, w = x.shape
        count, pixels = n * h * w, slots[0, 0].numel()
        windows = x[:, :, :h // 2 * 2, :w // 2 * 2].unflatten(2, (h // 2, 2)).unflatten(4, (w // 2, 2))
        masked, zero = grad.new_empty(grad.shape), grad.new_zeros(())  # grad at slot k's maxima (one buffer)
        grad_beta = torch.where(slots >= 0, grad, zero, out=masked).sum((0, 2, 3)).double()  # Σ g, ReLU on
        grad_x_sel = sum(  # Σ g·xᵀ at the maxima, slot by slot
            torch.bmm(torch.where(slots == k, grad, zero, out=masked).view(n, -1, pixels),
                      windows[:, :, :, dy, :, dx].reshape(n, c, pixels).transpose(1, 2)).sum(0).double()
            for k, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))))
        grad_gamma = ((grad_x_sel * weight).sum(1) - mean * grad_beta) * inv_std  # Σ g·x̂
        gamma64 = torch.ones_like(mean) if gamma is None else gamma.double()
        xhat_x = (weight @ gram - mean[:, None] * sum_x) * inv_std[:, None]  # Σ x̂ xᵀ over all pixels
        grad_weight = (gamma64 * inv_std)[:, None] * (grad_x_sel - grad_beta[:, None] * sum_x / count
                                                      - grad_gamma[:, None] * xhat_x / count)
        return (None, grad_weight.to(x.dtype), None if gamma is None else grad_gamma.to(gamma.dtype),
                None if ctx.beta_is_none else grad_beta.to(x.dtype), None)


@torch.jit.unused  # TorchScript runs the published graph (modules cannot be arguments there)
def pointwise_conv_bn_relu_pool(conv, bn, pool, x):
    """pool(relu(bn(conv(x)))) for a `PointwiseConv2d` and a `MaxPool2x2` (SAN's stem and its first stage's pool).

    On CPU the full-resolution map is never written. At inference (`inference_fast_path`, `bn` in eval mode) the
    2x2 maximum commutes with the per-channel bias and with the ReLU (both monotonic, in rounding too), so only the
    BatchNorm-folded matmul runs at full resolution, on bands of rows across the batch of about POOLED_BAND_BYTES
    (cache-resident) that are pooled at once, and the bias and ReLU follow on the 4x smaller pooled map (an odd
    last row or column, which the pool drops, is not computed). In training (a float32/64 input that takes no
    gradient, a bias-free conv, a plain `nn.BatchNorm2d` with batch statistics, no autocast) the same runs with
    the batch statistics, `PooledStemTraining`, which also updates the running statistics as BatchNorm does.
    Equal to the unfused composition up to rounding; otherwise it is that composition (the published graph)."""
    on_cpu = x.dim() == 4 and x.device.type == "cpu"
    if on_cpu and uses_running_stats(bn) and inference_fast_path():
        weight, bias = folded_pointwise_bn(conv, bn)
        pooled, _ = pooled_pointwise_bands(weight.flatten(1), x)
        return torch.relu_(pooled.add_(bias.view(-1, 1, 1).to(pooled.dtype)))
    if on_cpu and trains_stem_pooled(conv, bn, x):
        out, mean, var = PooledStemTraining.apply(x, conv.weight.flatten(1), bn.weight, bn.bias, bn.eps)
        update_running_stats(bn, mean, var, x.numel() // x.shape[1])
        return out
    return pool(torch.relu_(bn(conv(x))))


def trains_stem_pooled(conv, bn, x):
    """Where `PooledStemTraining` computes pool(relu(bn(conv(x)))) exactly (see `pointwise_conv_bn_relu_pool`)."""
    return (bn.training and type(bn) is nn.BatchNorm2d and conv.bias is None
            and x.dtype in (torch.float32, torch.float64) and not x.requires_grad
            and not torch.is_autocast_enabled("cpu"))


@torch.no_grad()
def update_running_stats(bn, mean, var, count):
    """BatchNorm2d's running-statistics update in training from a batch's mean and biased variance over `count`
    values per channel (momentum, or the cumulative average where momentum is None)."""
    if not bn.track_running_stats or bn.running_mean is None:
        return
    bn.num_batches_tracked.add_(1)
    factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    bn.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
    bn.running_var.mul_(1 - factor).add_(var * (count / max(count - 1, 1)), alpha=factor)


class SAM(nn.Module):
    """Local self-attention of SAN: weights from relations of conv1/conv2, aggregated over conv3 (the value).

    Args mirror the original `SAM(sa_type, in_planes, rel_planes, out_planes, share_planes, kernel_size,
    stride, dilation)`; the attention weight has `out_planes // share_planes` channels.
    """

    def __init__(self, sa_type, in_planes, rel_planes, out_planes, share_planes, kernel_size=3, stride=1, dilation=1):
        super().__init__()
        self.sa_type = sa_type_id(sa_type)
        if out_planes % share_planes:
            raise ValueError(f"out_planes ({out_planes}) must be divisible by share_planes ({share_planes})")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (centre-minus-neighbour relations), got {kernel_size}")
        if self.sa_type == 1 and stride != 1:
            raise ValueError("patchwise SAM supports stride=1 only (the original stride branch is dead code)")
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation
        self.padding = (dilation * (kernel_size - 1) + 1) // 2
        weight_planes = out_planes // share_planes
        taps = kernel_size * kernel_size
        self.conv1 = PointwiseConv2d(in_planes, rel_planes)
        self.conv2 = PointwiseConv2d(in_planes, rel_planes)
        self.conv3 = PointwiseConv2d(in_planes, out_planes)
        if self.sa_type == 0:
            self.conv_w = nn.Sequential(
                nn.BatchNorm2d(rel_planes + 2), nn.ReLU(inplace=True),
                PointwiseConv2d(rel_planes + 2, rel_planes, bias=False),
                nn.BatchNorm2d(rel_planes), nn.ReLU(inplace=True),
                PointwiseConv2d(rel_planes, weight_planes))
            self.conv_p = PointwiseConv2d(2, 2)
        else:
            self.conv_w = nn.Sequential(
                nn.BatchNorm2d(rel_planes * (taps + 1)), nn.ReLU(inplace=True),
                PointwiseConv2d(rel_planes * (taps + 1), weight_planes, bias=False),
                nn.BatchNorm2d(weight_planes), nn.ReLU(inplace=True),
                PointwiseConv2d(weight_planes, taps * weight_planes))
            self.conv_p = None  # no position encoding in patchwise (and no state-dict entry)
        self.attn_probe = AttentionProbe()  # the weights are sent through it when visualising (no fused path then)

    def check_input_size(self, height: int, width: int):
        """Reflection padding reads one mirror image only: the map must be larger than the padding."""
        if height <= self.padding or width <= self.padding:
            raise ValueError(f"SAM with kernel_size={self.kernel_size}, dilation={self.dilation} uses reflect "
                             f"padding {self.padding} and needs a feature map of at least "
                             f"{self.padding + 1}x{self.padding + 1}; got {height}x{width}")

    @torch.jit.unused
    def folds_batchnorm(self) -> bool:
        """True where the inference rewrites apply: autograd off, conv_w's BatchNorms at running stats, and not
        under symbolic FX tracing (the rewrites read concrete shapes and strides)."""
        return inference_fast_path() and not fx_tracing() and uses_running_stats(self.conv_w[0]) and uses_running_stats(self.conv_w[3])

    @torch.jit.unused
    def folded_hidden_layer(self):
        """(weight (out, in), bias) of conv_w.2 with conv_w.3 (inference BatchNorm) folded in."""
        weight, bias = folded_pointwise_bn(self.conv_w[2], self.conv_w[3])
        return weight.flatten(1), bias

    def pairwise_weights(self, x):
        """softmax_t(conv_w([x1(centre) - x2(neighbour t), Pe(centre) - Pe(neighbour t)])), (N, C_w, K², L)."""
        if not torch.jit.is_scripting() and self.folds_batchnorm():
            return self.pairwise_weights_folded(x)
        conv_p = self.conv_p
        assert conv_p is not None, "pairwise SAM only"
        x1, x2 = self.conv1(x), self.conv2(x)
        n, _, h, w = x.shape
        position = conv_p(position_map(h, w, x.device, x1.dtype))
        k, s, p, d = self.kernel_size, self.stride, self.padding, self.dilation
        relation = ops.subtraction2(x1, x2, k, s, p, d, "reflect")
        position_diff = ops.subtraction(position, k, s, p, d, "reflect").expand(n, -1, -1, -1)
        return F.softmax(self.conv_w(torch.cat([relation, position_diff], 1)), dim=-2)

    @torch.jit.unused
    def pairwise_weights_folded(self, x):
        """`pairwise_weights` with BatchNorm in inference mode, computed with fewer passes over the
        K²-sized tensors: conv_w.0 is an affine map commuting with the centre-minus-neighbour difference,
        so for the relation channels it moves onto the (K²-times smaller) inputs x1, x2 (the position
        channels, one image's worth, take it after the difference); conv_w.3 folds into conv_w.2; and the
        position branch, equal for every image, goes through conv_w.2 once and is broadcast over the batch
        instead of being concatenated. Same result up to rounding; used where `inference_fast_path()`."""
        rel = self.conv1.out_channels
        scale, shift = batchnorm_affine(self.conv_w[0])
        x1 = torch.addcmul(shift[:rel, None, None], self.conv1(x), scale[:rel, None, None])
        x2 = self.conv2(x) * scale[:rel, None, None]
        n, _, h, w = x.shape
        position = self.conv_p(position_map(h, w, x.device, x1.dtype))
        k, s, p, d = self.kernel_size, self.stride, self.padding, self.dilation
        relation = torch.relu_(ops.subtraction2(x1, x2, k, s, p, d, "reflect"))
        position_diff = ops.subtraction(position, k, s, p, d, "reflect")
        position_diff = torch.relu_(torch.addcmul(shift[rel:, None, None], position_diff, scale[rel:, None, None]))
        mid_weight, mid_shift = self.folded_hidden_layer()
        position_term = torch.addmm(mid_shift[:, None], mid_weight[:, rel:], position_diff[0].flatten(1))
        taps, length = relation.shape[-2:]
        hidden = torch.baddbmm(position_term.unsqueeze(0), mid_weight[:, :rel].expand(n, -1, -1),
                               relation.view(n, rel, taps * length))
        hidden = torch.relu_(hidden).view(n, -1, taps, length)
        return F.softmax(self.conv_w[5](hidden), dim=-2)

    @torch.jit.unused
    def pairwise_fused(self, x):
        """The whole pairwise SAM (weights and aggregation) as one `ops.san_pairwise` call, BatchNorms folded:
        no K²-sized tensor is written. Used where `folds_batchnorm()` and the device has the fused kernel."""
        scale, shift = batchnorm_affine(self.conv_w[0])
        hidden, mid_shift = self.folded_hidden_layer()
        h, w = x.shape[-2:]
        x1, x2, x3 = self.conv1(x), self.conv2(x), self.conv3(x)
        position = self.conv_p(position_map(h, w, x.device, x1.dtype))[0]
        logits = self.conv_w[5]
        return ops.san_pairwise(x1, x2, position, x3, scale, shift, hidden, mid_shift, logits.weight.flatten(1),
                                logits.bias, self.kernel_size, self.dilation)

    @torch.jit.unused
    def uses_fused_kernel(self, x) -> bool:
        """True where the whole SAM runs as one fused op (`san_pairwise` / `san_patchwise`): where
        `folds_batchnorm()`, no attention probe is listening, and the device has the fused kernel (a jit
        trace of patchwise records the published graph, see `patchwise_weights`)."""
        if self.stride != 1 or self.attn_probe.active or not self.folds_batchnorm():
            return False
        if self.sa_type == 1 and torch.jit.is_tracing():
            return False
        return has_kernel("san_pairwise" if self.sa_type == 0 else "san_patchwise", x.device.type)

    def patchwise_weights(self, x):
        """conv_w([x1(centre), reflect-padded k×k patch of x2 (channel c·K²+t)]) viewed (N, C_w, K², L)."""
        # (a jit trace records the published graph: the folded one writes into a buffer, out=, which a trace
        # replayed with autograd on could not differentiate)
        if not torch.jit.is_scripting() and not torch.jit.is_tracing() and self.folds_batchnorm():
            weights = self.conv_w[5](self.patchwise_hidden_folded(x))  # (N, C_w·K², H, W)
            return weights.view(weights.shape[0], -1, self.kernel_size ** 2, weights.shape[2] * weights.shape[3])
        x1, x2 = self.conv1(x), self.conv2(x)
        n, _, h, w = x.shape
        patch = F.unfold(F.pad(x2, [self.padding] * 4, mode="reflect"), self.kernel_size, dilation=self.dilation)
        features = torch.cat([x1.reshape(n, -1, 1, h * w), patch.view(n, -1, 1, h * w)], 1)
        return self.conv_w(features).view(n, -1, self.kernel_size * self.kernel_size, h * w)

    @torch.jit.unused
    def patchwise_hidden_folded(self, x):
        """conv_w up to its last ReLU (the input of conv_w.5), (N, C_w, H, W), with BatchNorm in inference mode,
        in one pass over the patch features instead of four (unfold, cat, BatchNorm, ReLU): conv_w.2 applied to
        relu(conv_w.0(patch)) is a sum of matmuls over chunks of window rows, each chunk's features computed
        straight from a strided view of the padded x2;
        conv_w.3 folds into conv_w.2. A chunk is the whole window while its features fit in PATCH_CHUNK_BYTES
        (a cache's worth), else one window row. Same result up to rounding; used where `inference_fast_path()`."""
        rel, k, d = self.conv1.out_channels, self.kernel_size, self.dilation
        scale, shift = batchnorm_affine(self.conv_w[0])
        weight, mid_shift = self.folded_hidden_layer()  # (C_w, rel·(K² + 1))
        n, _, h, w = x.shape
        centre = torch.relu_(torch.addcmul(shift[:rel, None, None], self.conv1(x), scale[:rel, None, None]))
        hidden = torch.baddbmm(mid_shift[:, None], weight[:, :rel].expand(n, -1, -1), centre.view(n, rel, h * w))
        padded = F.pad(self.conv2(x), [self.padding] * 4, mode="reflect")
        patch_weight = weight[:, rel:].view(-1, rel, k, k)
        patch_scale, patch_shift = scale[rel:].view(rel, k, k, 1, 1), shift[rel:].view(rel, k, k, 1, 1)
        rows = k if n * rel * k * k * h * w * padded.element_size() <= PATCH_CHUNK_BYTES else 1
        features = padded.new_empty(n, rel, rows, k, h, w)  # reused by every chunk
        batch_stride, channel_stride, row_stride = padded.stride()[:3]
        for row in range(0, k, rows):  # taps (row..row+rows-1, 0..K-1) of every channel, as a view of `padded`
            taps = padded.as_strided(features.shape, (batch_stride, channel_stride, d * row_stride, d, row_stride, 1),
                                     padded.storage_offset() + row * d * row_stride)
            rows_of = slice(row, row + rows)
            torch.relu_(torch.addcmul(patch_shift[:, rows_of], taps, patch_scale[:, rows_of], out=features))
            chunk_weight = patch_weight[:, :, rows_of].reshape(1, -1, rel * rows * k).expand(n, -1, -1)
            hidden = torch.baddbmm(hidden, chunk_weight, features.view(n, rel * rows * k, h * w))
        return torch.relu_(hidden).view(n, -1, h, w)

    @torch.jit.unused
    def patchwise_fused(self, x):
        """The patchwise SAM's conv_w.5 and aggregation as one `ops.san_patchwise` call on the folded hidden
        features: the (N, C_w·K², H·W) weights are never written. Used where `uses_fused_kernel(x)`."""
        value = self.conv3(x)
        logits = self.conv_w[5]
        return ops.san_patchwise(self.patchwise_hidden_folded(x).to(value.dtype), value, logits.weight.flatten(1),
                                 logits.bias, self.kernel_size, self.dilation)

    def forward(self, x):
        self.check_input_size(x.shape[-2], x.shape[-1])
        if not torch.jit.is_scripting() and self.uses_fused_kernel(x):  # TorchScript: the published graph
            return self.pairwise_fused(x) if self.sa_type == 0 else self.patchwise_fused(x)
        if self.conv_p is not None:  # pairwise (sa_type 0)
            weights = self.pairwise_weights(x)
        else:
            weights = self.patchwise_weights(x)
        if self.attn_probe.active:
            self.attn_probe(weights)
        value = self.conv3(x)
        # Under autocast the weight branch may end in float32 (softmax, BatchNorm) while the value 1x1 conv
        # ran in the autocast dtype: aggregate in the value's dtype (the kernels accumulate in float32).
        return ops.aggregation(value, weights.to(value.dtype), self.kernel_size, self.stride, self.padding,
                               self.dilation, "reflect")


class Bottleneck(nn.Module):
    """Pre-activation residual block: x + drop_path(conv(relu(bn2(sam(relu(bn1(x))))))), identity shortcut.

    `drop_path` (stochastic depth, timm's `drop_path_rate`) is 0 in the published recipe."""

    def __init__(self, sa_type, in_planes, rel_planes, mid_planes, out_planes, share_planes=8, kernel_size=7, stride=1,
                 drop_path=0.0):
        super().__init__()
        if in_planes != out_planes or stride != 1:
            raise ValueError("SAN Bottleneck has an identity shortcut: needs in_planes == out_planes and stride 1, "
                             f"got {in_planes} -> {out_planes}, stride {stride}")
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.sam = SAM(sa_type, in_planes, rel_planes, mid_planes, share_planes, kernel_size, stride)
        self.bn2 = nn.BatchNorm2d(mid_planes)
        self.conv = PointwiseConv2d(mid_planes, out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x):
        out = self.relu(self.bn1(x))
        out = self.relu(self.bn2(self.sam(out)))
        return self.drop_path(self.conv(out)) + x
