# The ELSA segmentation recipe on top of schedule_160k (spec elsa.md §6.2), mmseg 1.x form:
# AdamW lr 6e-5, betas (0.9, 0.999), weight decay 0.01, no clipping, fp32 (no AMP in the original).
# custom_keys are matched as substrings of parameter names, so every LayerNorm (`norm*`) is not decayed;
# `absolute_pos_embed` is unused (ape=False) and `relative_position_bias_table` matches nothing in
# ELSA-Swin (its table is `rb`): `rb`, `ghost_head` and all non-norm biases ARE decayed, as published.
_base_ = ['./schedule_160k.py']
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    clip_grad=None,
    paramwise_cfg=dict(custom_keys={
        'absolute_pos_embed': dict(decay_mult=0.),
        'relative_position_bias_table': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.),
    }))
# mmcv 1.x `lr_config = dict(policy='poly', power=1.0, min_lr=0.0, by_epoch=False, warmup='linear',
# warmup_iters=1500, warmup_ratio=1e-6)`: the warmup factor multiplies the poly LR, and poly counts from
# iteration 0 over all 160k — i.e. both schedulers active together from 0 (mmengine chains them):
# lr(t) = 6e-5 * (1 - t/160000) * (1e-6 + (1 - 1e-6) * min(t, 1500)/1500).
# mmengine's linear/poly schedulers reach their end value at step `end - 1`, hence the `+ 1`s.
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500 + 1),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=0, end=160000 + 1, by_epoch=False),
]
