"""Attention maps taken from the model's real forward by forward hooks (nothing is re-implemented).

Where each layer's map comes from:
- ELSA (`localattn.layers.elsa.ELSA`): the output of its `attn` Sequential, the pre-softmax logits
  `(B, heads·K², H, W)`; the map is their softmax over the K² taps (what the aggregation consumes),
  and the ghost head (`ELSA.ghost_kernels`) turns it into the effective per-channel filter.
- SAN (`localattn.layers.san.SAM`): the `(N, C_w, K², H·W)` weights the layer sends through its
  `attn_probe` right before the aggregation (pairwise: softmaxed; patchwise: as they come); while the
  probe is active the layer takes its unfused path, so the weights exist.
- SimpleSelfAttention / SAGAN `SelfAttention`: the `(B, N, N)` map the layer sends through its
  `attn_probe`.
An `AttentionProbe` is active only while capturing.
"""
import contextlib
import fnmatch
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn as nn


class AttentionProbe(nn.Identity):
    """Tap for a map a layer does not otherwise materialise: the layer computes it and passes it through
    this Identity only while `active` (turned on by `capture_attention`), so it costs nothing otherwise."""

    def __init__(self):
        super().__init__()
        self.active = False


@dataclass
class LocalMaps:
    """K×K weights of a local-attention layer for every output pixel.

    weights: `(B, G, K², H, W)` as the aggregation uses them (G heads for ELSA, weight channels for SAN).
    in_size: `(H_in, W_in)` of the value map the K×K windows read (H·stride for strided layers).
    ghost: ELSA only — `(mul, add)` each `(G, C/G, K, K)` or None, the effective ghost-head kernels.
    """
    name: str
    kind: str
    group: str
    weights: torch.Tensor
    kernel_size: int
    dilation: int
    stride: int
    in_size: tuple
    ghost: tuple = None

    def effective_filter(self, b, y, x):
        """ELSA's per-channel filter at output pixel (y, x): ghost_mul · attn + ghost_add, `(G, C/G, K, K)`."""
        k = self.kernel_size
        attn = self.weights[b, :, :, y, x].reshape(-1, 1, k, k)
        mul, add = self.ghost
        out = attn if mul is None else mul * attn
        return out if add is None else out + add


@dataclass
class GlobalMaps:
    """Global attention over a `size=(H, W)` map: `weights[b, i, j]` = weight of key pixel i for query j."""
    name: str
    kind: str
    weights: torch.Tensor
    size: tuple


def _elsa_hook(name, layer, maps, module, inputs, logits):
    b, _, h, w = logits.shape
    heads, k = layer.num_heads, layer.kernel_size
    weights = logits.detach().reshape(b, heads, k * k, h, w).softmax(dim=2)
    with torch.no_grad():
        mul, add = (None if t is None else t.detach().reshape(heads, -1, k, k) for t in layer.ghost_kernels())
    maps[name] = LocalMaps(name, "ELSA", "head", weights, k, layer.dilation, layer.stride,
                           (h * layer.stride, w * layer.stride), (mul, add))


def _input_size_hook(sizes, name, module, inputs):
    sizes[name] = tuple(inputs[0].shape[-2:])


def _san_weight_hook(name, layer, sizes, maps, module, inputs, out):
    k, (h_in, w_in) = layer.kernel_size, sizes[name]
    reach = layer.dilation * (k - 1) + 1
    h, w = ((size + 2 * layer.padding - reach) // layer.stride + 1 for size in (h_in, w_in))
    weights = out.detach().reshape(out.shape[0], -1, k * k, h, w)
    pairwise = layer.sa_type == 0
    maps[name] = LocalMaps(name, "SAN pairwise" if pairwise else "SAN patchwise", "weight channel", weights, k,
                           layer.dilation, layer.stride, (h_in, w_in))


def _probe_hook(name, kind, sizes, maps, module, inputs, out):
    maps[name] = GlobalMaps(name, kind, out.detach(), sizes[name])


def attention_layers(model, patterns=None):
    """`(name, module)` of every layer whose maps can be captured, optionally filtered by fnmatch `patterns`."""
    from localattn.layers.elsa import ELSA
    from localattn.layers.san import SAM
    from localattn.layers.simple_self_attention import SelfAttention, SimpleSelfAttention

    found = []
    for name, module in model.named_modules():
        if isinstance(module, (ELSA, SAM, SimpleSelfAttention, SelfAttention)):
            if not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns):
                found.append((name, module))
    return found


@contextlib.contextmanager
def capture_attention(model, patterns=None):
    """Inside the block every forward of `model` records the attention maps of its layers (those matching
    `patterns`, module-name globs) into the yielded dict `name -> LocalMaps | GlobalMaps`."""
    from localattn.layers.elsa import ELSA
    from localattn.layers.san import SAM
    from localattn.layers.simple_self_attention import SimpleSelfAttention

    maps, sizes, handles, probes = {}, {}, [], []
    for name, layer in attention_layers(model, patterns):
        if isinstance(layer, ELSA):
            handles.append(layer.attn.register_forward_hook(partial(_elsa_hook, name, layer, maps)))
        elif isinstance(layer, SAM):
            handles.append(layer.register_forward_pre_hook(partial(_input_size_hook, sizes, name)))
            handles.append(layer.attn_probe.register_forward_hook(partial(_san_weight_hook, name, layer, sizes, maps)))
        else:
            kind = "SimpleSelfAttention" if isinstance(layer, SimpleSelfAttention) else "SAGAN self-attention"
            handles.append(layer.register_forward_pre_hook(partial(_input_size_hook, sizes, name)))
            handles.append(layer.attn_probe.register_forward_hook(partial(_probe_hook, name, kind, sizes, maps)))
        if not isinstance(layer, ELSA):
            layer.attn_probe.active = True
            probes.append(layer.attn_probe)
    try:
        yield maps
    finally:
        for handle in handles:
            handle.remove()
        for probe in probes:
            probe.active = False
