# XResNet-50 with SimpleSelfAttention (fastai xresnet + SSA) + Mask R-CNN + FPN, 1x, COCO 2017, batch 2/GPU x 8.
# New baseline of this library: no published COCO number exists for xresnet-SSA (no paper mAP to compare with).
# Same AdamW recipe as the ELSA-Swin configs; BatchNorm statistics frozen (norm_eval) and stem + stage 0
# frozen, as mmdet does for ResNet-50.
# Train: tools/dist_train.sh configs/det/xresnet/mask_rcnn_xresnet50_ssa_fpn_1x_coco.py 8 --cfg-options model.pretrained=<xresnet50 ssa cls checkpoint>
_base_ = [
    '../_base_/models/mask_rcnn_elsa_swin_fpn.py', '../_base_/datasets/coco_instance.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py'
]
model = dict(
    backbone=dict(
        _delete_=True,
        type='XResNet',
        depth=50,
        sa=True,
        sym=False,
        out_indices=(1, 2, 3, 4),  # strides 4, 8, 16, 32
        frozen_stages=1,
        norm_eval=True,
        with_cp=False),
    neck=dict(in_channels=[256, 512, 1024, 2048]))
optim_wrapper = dict(paramwise_cfg=dict(norm_decay_mult=0.))  # BN layers are not named 'norm*' here
