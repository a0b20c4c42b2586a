# SAN10 (pairwise self-attention, Zhao et al. CVPR 2020) + Mask R-CNN + FPN, 1x, COCO 2017, batch 2/GPU x 8.
# New baseline of this library: no published COCO number exists for SAN (no paper mAP to compare with).
# Same AdamW recipe as the ELSA-Swin configs; BatchNorm statistics frozen (norm_eval) at 2 images/GPU and the
# stem + first two stages (down to stride 4) frozen, as mmdet does for ResNet (frozen_stages=1 there).
# Train: tools/dist_train.sh configs/det/san/mask_rcnn_san10_pairwise_fpn_1x_coco.py 8 --cfg-options model.pretrained=<san10_pairwise cls checkpoint>
_base_ = [
    '../_base_/models/mask_rcnn_elsa_swin_fpn.py', '../_base_/datasets/coco_instance.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py'
]
model = dict(
    backbone=dict(
        _delete_=True,
        type='SAN',
        sa_type='pairwise',
        depth=10,
        out_indices=(1, 2, 3, 4),  # strides 4, 8, 16, 32
        frozen_stages=2,
        norm_eval=True,
        with_cp=False),
    neck=dict(in_channels=[256, 512, 1024, 2048]))
optim_wrapper = dict(paramwise_cfg=dict(norm_decay_mult=0.))  # BN layers are not named 'norm*' here
