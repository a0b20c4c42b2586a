# A small ELSA-Swin Mask R-CNN for the synthetic shapes dataset (`make demo`, tests/det): CPU-sized
# (embed 32, one block per stage, 64-channel FPN and heads), trained from scratch in a few minutes.
# Same model family, pipeline structure and AdamW/step recipe as configs/det/elsa_swin, scaled down.
#   python -c "from localattn.det.synthetic import make_synthetic_coco as m; m('data/synthetic_coco')"
#   tools/train.py configs/det/synthetic/mask_elsa_synthetic.py
#   tools/test.py configs/det/synthetic/mask_elsa_synthetic.py work_dirs/mask_elsa_synthetic/epoch_12.pth --eval bbox segm
_base_ = [
    '../_base_/models/mask_rcnn_elsa_swin_fpn.py', '../_base_/datasets/synthetic_coco.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py'
]
width = 64
model = dict(
    backbone=dict(embed_dim=32, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8], group_width=4, drop_path_rate=0.0),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=width),
    rpn_head=dict(in_channels=width, feat_channels=width),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=width),
        bbox_head=dict(in_channels=width, fc_out_channels=256, num_classes=3),
        mask_roi_extractor=dict(out_channels=width),
        mask_head=dict(num_convs=2, in_channels=width, conv_out_channels=width, num_classes=3)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=500, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=100)))

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs, val_interval=4)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[9, 11], gamma=0.1)
]
optim_wrapper = dict(optimizer=dict(lr=1e-3, weight_decay=0.05))
auto_scale_lr = dict(base_batch_size=4)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=4, max_keep_ckpts=2))
log_processor = dict(window_size=10)
