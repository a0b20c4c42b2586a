# UPerNet + SAN10-pairwise, ADE20K 512x512, 160k iterations, 8 GPUs x 2 images.
# New baseline (no published ADE20K number for SAN): mmseg's ResNet UPerNet recipe — SGD 0.01,
# momentum 0.9, weight decay 5e-4, poly 0.9 to 1e-4 — with the ELSA data pipeline and protocol.
# Evaluate like the ELSA configs: tools/test.py THIS_CONFIG CKPT --aug-test --eval mIoU
# Train: tools/dist_train.sh THIS_CONFIG 8 --cfg-options model.pretrained=<SAN10-pairwise ImageNet ckpt>
_base_ = [
    '../_base_/models/upernet_cnn.py', '../_base_/datasets/ade20k.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_160k.py'
]
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    # stages 1..4 (stride 4..32, 256..2048 channels); SAN needs inputs >= 128 px (reflect padding)
    backbone=dict(type='SAN', sa_type='pairwise', depth=10, out_indices=(1, 2, 3, 4), norm_eval=False))
