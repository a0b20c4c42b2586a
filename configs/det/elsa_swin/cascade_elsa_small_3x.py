# ELSA-Swin-S + Cascade Mask R-CNN, 3x schedule (36 epochs, LR steps at 27 and 33), COCO 2017, batch 2/GPU x 8 GPUs.
# Paper (ELSA, COCO val2017): box mAP 52.3, mask mAP 45.2, 110M parameters (spec elsa.md §5.3).
# Train:  tools/dist_train.sh configs/det/elsa_swin/cascade_elsa_small_3x.py 8 --cfg-options model.pretrained=<elsa_swin_small cls checkpoint>
# Test:   tools/dist_test.sh configs/det/elsa_swin/cascade_elsa_small_3x.py <checkpoint> 8 --eval bbox segm
_base_ = [
    '../_base_/models/cascade_mask_rcnn_elsa_swin_fpn.py', '../_base_/datasets/coco_instance.py',
    '../_base_/schedules/schedule_3x.py', '../_base_/default_runtime.py'
]
model = dict(
    backbone=dict(
        depths=[2, 2, 18, 2],
        group_width=8,
        drop_path_rate=0.75),  # 0.75, not Swin's 0.2 (spec §5.2)
    neck=dict(in_channels=[96, 192, 384, 768]))
