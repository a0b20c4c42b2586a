# UPerNet + ELSA-Swin-T, ADE20K 512x512, 160k iterations, 8 GPUs x 2 images.
# Paper (ELSA, arXiv 2112.12786, Table: ADE20K val): 47.9 mIoU (multi-scale + flip), 61M params.
# Reproduce the evaluation protocol with: tools/test.py THIS_CONFIG CKPT --aug-test --eval mIoU
# Train: tools/dist_train.sh THIS_CONFIG 8 --cfg-options model.pretrained=<ELSA-Swin-T ImageNet ckpt>
_base_ = [
    '../_base_/models/upernet_elsa_swin.py', '../_base_/datasets/ade20k.py',
    '../_base_/default_runtime.py', '../_base_/schedules/elsa_adamw_poly_160k.py'
]
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        embed_dim=96,
        depths=[2, 2, 6, 2],
        num_heads=[3, 6, 12, 24],
        group_width=4,
        drop_path_rate=0.3),
    decode_head=dict(in_channels=[96, 192, 384, 768], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150))
