# 12 epochs, AdamW 1e-4 / wd 0.05, step x0.1 at epochs 8 and 11, linear warmup 500 iterations from 0.001x
# (spec elsa.md §5.2). apex AMP O1 of the original -> mmengine's AmpOptimWrapper (fp32 on CPU machines).
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=12, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1)
]

# mmengine matches custom_keys as substrings of the parameter name, like mmcv did: every LayerNorm ('norm')
# is not decayed; ELSA's `rb` bias table, `ghost_head` and the non-norm biases ARE decayed
# ('relative_position_bias_table' matches nothing in ELSA-Swin) — kept as published (spec §5.2, §9.8).
optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={
        'absolute_pos_embed': dict(decay_mult=0.),
        'relative_position_bias_table': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.)
    }))

# The recipe's batch: 2 images per GPU x 8 GPUs.
auto_scale_lr = dict(enable=False, base_batch_size=16)
