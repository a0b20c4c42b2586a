"""Effective receptive field: the input gradient of one location of a model's last feature map."""
import torch


def last_feature_map(model, x):
    """The last dense feature map `(B, C, h, w)` of a timm model (`forward_intermediates`) or of a dense
    backbone whose forward returns a tuple of NCHW maps (mmdet/mmseg backbones)."""
    if hasattr(model, "forward_intermediates"):
        out = model.forward_intermediates(x, indices=1, intermediates_only=True)[-1]
    else:
        out = model(x)
        out = out[-1] if isinstance(out, (tuple, list)) else out
    if not (torch.is_tensor(out) and out.dim() == 4):
        raise ValueError(f"{type(model).__name__}: expected an NCHW feature map for the receptive field, "
                         f"got {type(out).__name__} {tuple(getattr(out, 'shape', ()))}")
    return out


def effective_receptive_field(model, x, location=None):
    """|∂ Σ_c f[0, c, y, x] / ∂ input| summed over input channels, `(H, W)`, for the model in eval mode.

    `location=(y, x)` on the feature map (default: its centre). Returns `(erf, (y, x), (h, w))`.
    """
    x = x[:1].detach().clone().requires_grad_(True)
    with torch.enable_grad():
        features = last_feature_map(model, x)
        h, w = features.shape[-2:]
        y, xx = location if location is not None else (h // 2, w // 2)
        if not (0 <= y < h and 0 <= xx < w):
            raise ValueError(f"receptive-field location {(y, xx)} outside the {h}x{w} feature map")
        features[0, :, y, xx].sum().backward()
    return x.grad[0].abs().sum(0), (y, xx), (h, w)
