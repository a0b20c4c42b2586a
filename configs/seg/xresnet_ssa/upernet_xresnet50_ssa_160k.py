# UPerNet + XResNet-50 with SimpleSelfAttention, ADE20K 512x512, 160k iterations, 8 GPUs x 2 images.
# New baseline (no published ADE20K number for xresnet-SSA): mmseg's ResNet UPerNet recipe — SGD 0.01,
# momentum 0.9, weight decay 5e-4, poly 0.9 to 1e-4 — with the ELSA data pipeline and protocol.
# Evaluate like the ELSA configs: tools/test.py THIS_CONFIG CKPT --aug-test --eval mIoU
# Train: tools/dist_train.sh THIS_CONFIG 8 --cfg-options model.pretrained=<xresnet50-SSA ImageNet ckpt>
_base_ = [
    '../_base_/models/upernet_cnn.py', '../_base_/datasets/ade20k.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_160k.py'
]
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    # feature indices 1..4 = stages (stride 4..32, 256..2048 channels); SSA in the last block of stage 0
    backbone=dict(type='XResNet', depth=50, sa=True, sym=False, out_indices=(1, 2, 3, 4), norm_eval=False))
