# 160k-iteration schedule (original mmseg 0.11 `schedule_160k.py`): SGD 0.01 / poly 0.9 (min 1e-4),
# checkpoint and mIoU evaluation every 16k iterations, log every 50. ELSA configs replace the optimizer
# and the LR policy with the published AdamW + warmup-poly recipe.
optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0005)
optim_wrapper = dict(type='OptimWrapper', optimizer=optimizer, clip_grad=None)
# mmcv 1.x poly: lr(t) = (0.01 - 1e-4) * (1 - t/160000)^0.9 + 1e-4; mmengine's PolyLR reaches eta_min at
# step `end - 1`, hence `+ 1`.
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=160000 + 1, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=160000, val_interval=16000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=16000),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
