# ADE20K (ADEChallengeData2016), 150 classes, 512x512 crops — mmseg 1.x form of the original
# mmseg 0.11 `_base_/datasets/ade20k.py` used by ELSA.
#
# Test protocol (the spec's "6-scale quirk", decided here):
# * `test_pipeline` is TRUE single scale: short side 512 (long side <= 2048), no flip. It serves the
#   in-training validation every 16k iterations and a plain `tools/test.py CONFIG CKPT`.
#   (The original repo left `img_ratios` active in this file, so its "single-scale" numbers were really
#   6-scale without flip; we do not copy that.)
# * `tta_pipeline` is the paper's protocol: 6 scales x {no flip, flip} = 12 passes per image, softmax
#   averaged (SegTTAModel). `tools/test.py CONFIG CKPT --aug-test --eval mIoU` (or `--tta`) uses it and
#   reproduces the published "ms+flip" mIoU. Scale r resizes into (2048r, 512r) keeping the aspect
#   ratio, exactly as the original MultiScaleFlipAug(img_scale=(2048, 512), img_ratios=...) did
#   (upstream mmseg 1.x instead rescales the raw image by r, a different protocol).
dataset_type = 'CheckedADE20KDataset'  # mmseg's ADE20KDataset + clear errors for a broken layout
data_root = 'data/ade/ADEChallengeData2016'
crop_size = (512, 512)
img_scale = (2048, 512)
img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),  # reduce_zero_label is a dataset setting in mmseg 1.x
    dict(type='CheckSegMapSize'),
    dict(type='RandomResize', scale=img_scale, ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    # Normalize and Pad to crop_size (img 0, seg 255) happen in the model's SegDataPreProcessor.
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    # annotations are loaded after Resize: metrics compare at the original resolution
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
train_dataloader = dict(
    batch_size=2,  # per GPU; the published runs use 8 GPUs x 2 = 16
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        reduce_zero_label=True,
        data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        reduce_zero_label=True,
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
