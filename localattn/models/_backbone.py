"""Behaviour shared by the convolutional-style backbones (SAN, XResNet): frozen stages, norm_eval, head, pretrained.

A backbone using this mixin defines `stem_modules()` and `stage_modules(i)` (the modules that make up
stem and stage `i`, used for freezing), `self.fc`/`self.global_pool`, `self.num_features`,
`self.feature_info` (one dict per stage) and `forward_intermediates`.
"""
import torch.nn as nn
from timm.layers import SelectAdaptivePool2d


def check_out_indices(out_indices, num_stages):
    """Validated tuple of stage indices (negative indices count from the end)."""
    indices = tuple(i % num_stages if -num_stages <= i < num_stages else None for i in out_indices)
    if None in indices:
        raise ValueError(f"out_indices must lie in [-{num_stages}, {num_stages}), got {tuple(out_indices)}")
    return indices


class DenseBackboneMixin:
    """frozen_stages / norm_eval handling, timm classifier helpers and dense (tuple-of-maps) forward."""

    def setup_head(self, num_classes, global_pool="avg", drop_rate=0.0):
        self.num_classes, self.drop_rate = num_classes, drop_rate
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self):
        return self.fc

    def reset_classifier(self, num_classes, global_pool=None):
        """New head with `num_classes` outputs (0 = pooled features); `global_pool` changes the pooling."""
        self.setup_head(num_classes, self.global_pool.pool_type if global_pool is None else global_pool,
                        self.drop_rate)

    def no_weight_decay(self):
        """The published recipes decay every parameter; nothing is exempt."""
        return set()

    def set_grad_checkpointing(self, enable=True):
        self.with_cp = enable

    def forward_head(self, x, pre_logits=False):
        x = self.global_pool(x)
        if self.drop_rate:
            x = nn.functional.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x):
        """Logits (classification), or a tuple of NCHW maps at `out_indices` when the backbone is dense."""
        if self.out_indices is not None:
            return tuple(self.forward_intermediates(x, indices=list(self.out_indices), intermediates_only=True,
                                                    stop_early=True))
        return self.forward_head(self.forward_features(x))

    def freeze_stages(self):
        """Stem (frozen_stages >= 0) and stages 0..frozen_stages-1: eval mode, no gradients."""
        if self.frozen_stages < 0:
            return
        modules = list(self.stem_modules())
        for i in range(self.frozen_stages):
            modules += list(self.stage_modules(i))
        for module in modules:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode=True):
        """Keep frozen stages (and every BatchNorm when norm_eval) in eval mode."""
        super().train(mode)
        self.freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self
