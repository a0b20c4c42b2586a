# ELSA-Swin-T + Cascade Mask R-CNN, 1x schedule (12 epochs, LR steps at 8 and 11), COCO 2017, batch 2/GPU x 8 GPUs.
# Paper (ELSA, COCO val2017): box mAP 49.8, mask mAP 43.0, 86M parameters (spec elsa.md §5.3).
# Train:  tools/dist_train.sh configs/det/elsa_swin/cascade_elsa_tiny_1x.py 8 --cfg-options model.pretrained=<elsa_swin_tiny cls checkpoint>
# Test:   tools/dist_test.sh configs/det/elsa_swin/cascade_elsa_tiny_1x.py <checkpoint> 8 --eval bbox segm
_base_ = [
    '../_base_/models/cascade_mask_rcnn_elsa_swin_fpn.py', '../_base_/datasets/coco_instance.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py'
]
model = dict(
    backbone=dict(
        depths=[2, 2, 6, 2],
        group_width=4,
        drop_path_rate=0.0),  # 0.0: inherited from the vanilla Swin cascade-T 1x config
    neck=dict(in_channels=[96, 192, 384, 768]))
