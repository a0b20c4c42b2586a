"""SimpleSelfAttention (sdoria) and the fastai SAGAN `SelfAttention` it is compared with.

Spec: `simple_self_attention.md` §1–§2. Both use fastai's spectrally normalised, bias-free 1-D
convolution; `SpectralNormConv1d` reproduces `torch.nn.utils.spectral_norm` (same `weight_orig`,
`weight_u`, `weight_v` state-dict entries and the same power iteration) but exposes the normalised
weight as a function, so `sym=True` can symmetrise it every forward — the original's `sym` was a
no-op because the spectral-norm hook overwrote the symmetrised weight.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from localattn.viz.capture import AttentionProbe


class SpectralNormConv1d(nn.Module):
    """Bias-free Conv1d whose weight is `weight_orig / sigma`, sigma from one power iteration per training forward.

    Kaiming-normal init (fan-in, ReLU gain) as fastai's `conv1d`; u, v start as normalised Gaussians.
    """

    def __init__(self, n_in, n_out, ks=1, eps=1e-12):
        super().__init__()
        weight = torch.empty(n_out, n_in, ks)
        nn.init.kaiming_normal_(weight)
        self.weight_orig = nn.Parameter(weight)
        self.register_buffer("weight_u", F.normalize(torch.randn(n_out), dim=0, eps=eps))
        self.register_buffer("weight_v", F.normalize(torch.randn(n_in * ks), dim=0, eps=eps))
        self.eps, self.padding = eps, ks // 2

    def normalized_weight(self):
        """weight_orig / sigma; updates u, v in place (one power iteration) in training mode, like spectral_norm."""
        matrix = self.weight_orig.flatten(1)
        if self.training:
            with torch.no_grad():
                self.weight_v.copy_(F.normalize(torch.mv(matrix.t(), self.weight_u), dim=0, eps=self.eps))
                self.weight_u.copy_(F.normalize(torch.mv(matrix, self.weight_v), dim=0, eps=self.eps))
        # clones: a later forward updates the buffers in place while this graph may still need them
        sigma = torch.dot(self.weight_u.clone(), torch.mv(matrix, self.weight_v.clone()))
        return self.weight_orig / sigma

    def forward(self, x):
        return F.conv1d(x, self.normalized_weight(), padding=self.padding)


class SimpleSelfAttention(nn.Module):
    """out = x + gamma · (x xᵀ)(Ŵ x) over the flattened pixels, Ŵ spectrally normalised (C×C for ks=1).

    Args:
        n_in: channels C.
        ks: kernel size of the 1-D conv along the row-major flattened pixels (1 in every experiment).
        sym: use the symmetric weight (Ŵ + Ŵᵀ)/2, recomputed from the parameter every forward (ks=1 only).
    """

    def __init__(self, n_in, ks=1, sym=False):
        super().__init__()
        if sym and ks != 1:
            raise ValueError(f"sym=True needs a square C×C weight, i.e. ks=1; got ks={ks}")
        self.n_in, self.sym = n_in, sym
        self.conv = SpectralNormConv1d(n_in, n_in, ks)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.attn_probe = AttentionProbe()  # (x xᵀ)(Ŵx) = x·A with the N×N map A = xᵀŴx, sent when visualising

    def effective_weight(self):
        """The weight actually applied: Ŵ, or (Ŵ + Ŵᵀ)/2 when sym."""
        weight = self.conv.normalized_weight()
        if self.sym:
            weight = (weight + weight.transpose(0, 1)) / 2
        return weight

    def forward(self, x):
        if x.dim() != 4 or x.shape[1] != self.n_in:
            raise ValueError(f"SimpleSelfAttention expects (B, {self.n_in}, H, W), got {x.shape}")
        flat = x.flatten(2)
        value = F.conv1d(flat, self.effective_weight(), padding=self.conv.padding)
        gram = torch.bmm(flat, flat.transpose(1, 2))
        if self.attn_probe.active:
            self.attn_probe(torch.bmm(flat.transpose(1, 2), value))
        out = self.gamma * torch.bmm(gram, value) + flat
        return out.view_as(x).contiguous()


class SelfAttention(nn.Module):
    """fastai's SAGAN self-attention: out_j = x_j + gamma · Σ_i softmax_i(f_i·g_j) h_i, f/g C→C/8, h C→C."""

    def __init__(self, n_channels):
        super().__init__()
        if n_channels < 8:
            raise ValueError(f"SelfAttention needs n_channels >= 8 (query/key have n_channels // 8), got {n_channels}")
        self.n_channels = n_channels
        self.query = SpectralNormConv1d(n_channels, n_channels // 8)
        self.key = SpectralNormConv1d(n_channels, n_channels // 8)
        self.value = SpectralNormConv1d(n_channels, n_channels)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.attn_probe = AttentionProbe()  # beta, sent when visualising

    def forward(self, x):
        if x.dim() != 4 or x.shape[1] != self.n_channels:
            raise ValueError(f"SelfAttention expects (B, {self.n_channels}, H, W), got {x.shape}")
        flat = x.flatten(2)
        f, g, h = self.query(flat), self.key(flat), self.value(flat)
        beta = F.softmax(torch.bmm(f.transpose(1, 2), g), dim=1)
        if self.attn_probe.active:
            self.attn_probe(beta)
        out = self.gamma * torch.bmm(h, beta) + flat
        return out.view_as(x).contiguous()
