# UPerNet + a nano ELSA-Swin on the synthetic ADE20K-layout dataset of `localattn.seg.synthetic`
# (64x64 images, 4 classes named after the first four ADE20K classes). Used by `make demo` and the tests:
# everything not overridden here (transform types, heads, AdamW param groups, warmup+poly, evaluation,
# 6-scale + flip TTA) is the published ELSA-Swin-T recipe, scaled down to CPU size.
#   python -c "from localattn.seg.synthetic import make_synthetic_ade20k as m; m('data/synthetic_ade')"
#   tools/train.py configs/seg/synthetic/upernet_elsa_nano_synthetic.py
#   tools/test.py configs/seg/synthetic/upernet_elsa_nano_synthetic.py work_dirs/upernet_elsa_nano_synthetic/iter_200.pth --aug-test --eval mIoU
_base_ = ['../elsa_swin/upernet_elsa_tiny_160k.py']
num_classes = 4
metainfo = dict(classes=('wall', 'building', 'sky', 'floor'))
data_root = 'data/synthetic_ade'
crop_size = (64, 64)
img_scale = (256, 64)  # the ADE20K (2048, 512) divided by 8
img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
max_iters = 200
warmup_iters = 20

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(embed_dim=16, depths=[1, 1, 2, 1], num_heads=[1, 2, 2, 4], group_width=4, drop_path_rate=0.1),
    decode_head=dict(in_channels=[16, 32, 64, 128], channels=32, num_classes=num_classes),
    auxiliary_head=dict(in_channels=64, channels=16, num_classes=num_classes))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='CheckSegMapSize'),
    dict(type='RandomResize', scale=img_scale, ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='CheckSegMapSize'),
    dict(type='PackSegInputs'),
]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale=(int(img_scale[0] * r), int(img_scale[1] * r)), keep_ratio=True)
             for r in img_ratios],
            [dict(type='RandomFlip', prob=0., direction='horizontal'),
             dict(type='RandomFlip', prob=1., direction='horizontal')],
            [dict(type='LoadAnnotations')],
            [dict(type='CheckSegMapSize')],
            [dict(type='PackSegInputs')],
        ]),
]
train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader

# from scratch on CPU: a 10x higher LR than the 6e-5 fine-tuning LR, same param groups and schedule shape
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=warmup_iters + 1),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=0, end=max_iters + 1, by_epoch=False),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_iters // 2))
env_cfg = dict(cudnn_benchmark=False)
