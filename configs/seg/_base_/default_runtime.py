# Runtime shared by every segmentation config (mmseg 1.x / mmengine form of the original
# mmseg 0.11 `_base_/default_runtime.py`: text log every 50 iterations, cudnn_benchmark on).
# Importing `localattn.seg` registers our backbones, dataset and transforms in mmseg's registries.
custom_imports = dict(imports=['localattn.seg'], allow_failed_imports=False)
default_scope = 'mmseg'
env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),  # the tools switch to gloo when CUDA is unavailable
)
vis_backends = [dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
# Test-time augmentation wrapper used by `tools/test.py --aug-test` / `--tta` (see datasets/ade20k.py).
tta_model = dict(type='SegTTAModel')
