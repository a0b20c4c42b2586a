# ELSA-Swin-S + Cascade Mask R-CNN, 1x schedule (12 epochs, LR steps at 8 and 11), COCO 2017, batch 2/GPU x 8 GPUs.
# Paper (ELSA, COCO val2017): box mAP 51.6, mask mAP 44.4, 110M parameters (spec elsa.md §5.3).
# Train:  tools/dist_train.sh configs/det/elsa_swin/cascade_elsa_small_1x.py 8 --cfg-options model.pretrained=<elsa_swin_small cls checkpoint>
# Test:   tools/dist_test.sh configs/det/elsa_swin/cascade_elsa_small_1x.py <checkpoint> 8 --eval bbox segm
_base_ = [
    '../_base_/models/cascade_mask_rcnn_elsa_swin_fpn.py', '../_base_/datasets/coco_instance.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py'
]
model = dict(
    backbone=dict(
        depths=[2, 2, 18, 2],
        group_width=8,
        drop_path_rate=0.2),
    neck=dict(in_channels=[96, 192, 384, 768]))
