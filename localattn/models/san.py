"""SAN10/15/19 pairwise and patchwise backbones (spec `san.md` §2), with the official state-dict layout.

Stage `i` (0..4) = max-pool, 1x1 `conv{i}`, blocks `layer{i}`, then `bn{i}` + ReLU; its output has
stride 2^(i+1) and 64/256/512/1024/2048 channels. Classification: `SAN(...)(x)` gives logits.
Dense tasks: `SAN(..., num_classes=0, out_indices=(1, 2, 3, 4))(x)` gives a tuple of NCHW maps.
"""
import torch.nn as nn
import torch.utils.checkpoint as cp
from timm.models._features import feature_take_indices

from localattn.convert import load_pretrained
from localattn.layers.san import Bottleneck, MaxPool2x2, PointwiseConv2d, pointwise_conv_bn, sa_type_id

from ._backbone import DenseBackboneMixin, check_out_indices

SAN_LAYERS = {10: (2, 1, 2, 4, 1), 15: (3, 2, 3, 5, 2), 19: (3, 3, 4, 6, 3)}
SAN_KERNELS = (3, 7, 7, 7, 7)
SAN_WIDTHS = (64, 256, 512, 1024, 2048)


class SAN(DenseBackboneMixin, nn.Module):
    """Self-attention network of Zhao et al. (CVPR 2020).

    Args:
        sa_type: 'pairwise' / 'patchwise' (or the original 0 / 1).
        depth: 10, 15 or 19 — picks `layers` when `layers` is not given.
        layers, kernels: blocks and attention footprint per stage (5 entries each).
        num_classes: classifier outputs; 0 = no classifier (headless backbone).
        in_chans: input channels.
        out_indices: None = classification forward; a tuple of stage indices (0..4) = dense forward
            returning those stages' maps.
        frozen_stages: -1 = none; k >= 0 freezes the stem and stages 0..k-1.
        norm_eval: keep every BatchNorm in eval mode while training (dense fine-tuning).
        with_cp: gradient checkpointing per block.
        pretrained: path of an official / our checkpoint, loaded strictly (head keys ignored when
            the model has no classifier or a different number of classes).
    """

    def __init__(self, sa_type="pairwise", depth=10, layers=None, kernels=SAN_KERNELS, num_classes=1000, in_chans=3,
                 out_indices=None, frozen_stages=-1, norm_eval=False, with_cp=False, global_pool="avg", drop_rate=0.0,
                 pretrained=None):
        super().__init__()
        if layers is None:
            if depth not in SAN_LAYERS:
                raise ValueError(f"depth must be one of {sorted(SAN_LAYERS)} (or pass layers=), got {depth!r}")
            layers = SAN_LAYERS[depth]
        if len(layers) != 5 or len(kernels) != 5:
            raise ValueError(f"layers and kernels need 5 entries (stages 0..4), got {layers!r} and {kernels!r}")
        self.sa_type = sa_type_id(sa_type)
        self.layers, self.kernels = tuple(layers), tuple(kernels)
        self.out_indices = None if out_indices is None else check_out_indices(out_indices, 5)
        self.frozen_stages, self.norm_eval, self.with_cp = frozen_stages, norm_eval, with_cp

        self.conv_in = PointwiseConv2d(in_chans, SAN_WIDTHS[0], bias=False)
        self.bn_in = nn.BatchNorm2d(SAN_WIDTHS[0])
        previous = SAN_WIDTHS[0]
        for i, (width, blocks, kernel) in enumerate(zip(SAN_WIDTHS, self.layers, self.kernels)):
            self.add_module(f"conv{i}", PointwiseConv2d(previous, width, bias=False))
            self.add_module(f"bn{i}", nn.BatchNorm2d(width))
            self.add_module(f"layer{i}", nn.Sequential(*[
                Bottleneck(self.sa_type, width, width // 16, width // 4, width, 8, kernel) for _ in range(blocks)]))
            previous = width
        self.relu = nn.ReLU(inplace=True)
        self.pool = MaxPool2x2()
        self.num_features = self.head_hidden_size = SAN_WIDTHS[-1]
        self.setup_head(num_classes, global_pool, drop_rate)
        self.feature_info = [dict(num_chs=c, reduction=2 ** (i + 1), module=f"layer{i}")
                             for i, c in enumerate(SAN_WIDTHS)]
        self.freeze_stages()
        if pretrained is not None:
            self.load_checkpoint(pretrained)

    # -- structure ---------------------------------------------------------------------------------
    def stem_modules(self):
        return self.conv_in, self.bn_in

    def stage_modules(self, i):
        return getattr(self, f"conv{i}"), getattr(self, f"layer{i}"), getattr(self, f"bn{i}")

    def min_input_size(self, num_stages=5):
        """Smallest H/W the reflect padding of the first `num_stages` stages accepts (128 for all five)."""
        return max(2 ** (i + 1) * (kernel // 2 + 1) for i, kernel in enumerate(self.kernels[:num_stages]))

    def load_checkpoint(self, path):
        """Load an official SAN checkpoint strictly; head keys only ignored where our head differs."""
        ignore = () if isinstance(self.fc, nn.Linear) and self.fc.out_features == 1000 else (r"^fc\.",)
        return load_pretrained(self, path, "san", ignore_missing=ignore, ignore_unexpected=ignore)

    # -- forward -----------------------------------------------------------------------------------
    def _check_input(self, x, num_stages):
        if x.dim() != 4:
            raise ValueError(f"SAN expects an (N, C, H, W) image batch, got shape {tuple(x.shape)}")
        smallest = self.min_input_size(num_stages)
        if min(x.shape[-2:]) < smallest:
            raise ValueError(f"SAN input must be at least {smallest}x{smallest} (reflect padding of the "
                             f"attention needs each stage's map larger than its padding); got "
                             f"{x.shape[-2]}x{x.shape[-1]}")

    def _run_blocks(self, layer, x):
        for block in layer:
            x = cp.checkpoint(block, x, use_reentrant=False) if self.with_cp and x.requires_grad else block(x)
        return x

    def forward_stage(self, i, x):
        """Stage i: pool -> conv{i} -> layer{i} -> bn{i} -> ReLU."""
        x = getattr(self, f"conv{i}")(self.pool(x))
        x = self._run_blocks(getattr(self, f"layer{i}"), x)
        return self.relu(getattr(self, f"bn{i}")(x))

    def forward_stem(self, x):
        return self.relu(pointwise_conv_bn(self.conv_in, self.bn_in, x))

    def forward_features(self, x):
        self._check_input(x, 5)
        x = self.forward_stem(x)
        for i in range(5):
            x = self.forward_stage(i, x)
        return x

    def forward_intermediates(self, x, indices=None, norm=False, stop_early=False, output_fmt="NCHW",
                              intermediates_only=False):
        """timm 1.0 API: (final map, [maps of the selected stages]) or only the list."""
        if output_fmt != "NCHW":
            raise ValueError(f"SAN features are NCHW only, got output_fmt={output_fmt!r}")
        take_indices, max_index = feature_take_indices(5, indices)
        last = max_index if stop_early or intermediates_only else 4
        self._check_input(x, last + 1)
        intermediates = []
        x = self.forward_stem(x)
        for i in range(last + 1):
            x = self.forward_stage(i, x)
            if i in take_indices:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    def group_matcher(self, coarse=False):
        blocks = r"^(?:conv|bn|layer)(\d+)" if coarse else [
            (r"^conv(\d+)\.", (-1,)), (r"^layer(\d+)\.(\d+)", None), (r"^bn(\d+)\.", (99999,))]
        return dict(stem=r"^(?:conv_in|bn_in)\.", blocks=blocks)

    def prune_intermediate_layers(self, indices=1, prune_norm=False, prune_head=True):
        """Drop the stages after the last requested one (and the head); returns the kept indices."""
        take_indices, max_index = feature_take_indices(5, indices)
        for i in range(max_index + 1, 5):
            for name in (f"conv{i}", f"bn{i}"):
                setattr(self, name, nn.Identity())
            setattr(self, f"layer{i}", nn.Sequential())
        if max_index < 4:
            self.num_features = self.head_hidden_size = SAN_WIDTHS[max_index]
        if prune_head or max_index < 4:
            self.reset_classifier(0, "")
        return take_indices
