"""mmdet's own inference APIs accept our det configs: `init_detector` + `inference_detector` and `DetInferencer`
on the synthetic config; `init_detector` builds every real-size config (CPU, no checkpoint). conftest.py drops
the global mmengine instances they create."""
from pathlib import Path

import numpy as np
import pytest
import torch

DET_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "det"
SYNTHETIC = DET_CONFIGS / "synthetic" / "mask_elsa_synthetic.py"
CLASSES = ("square", "circle", "triangle")
REAL_CONFIGS = sorted(p for p in DET_CONFIGS.glob("*/*.py") if p.parent.name not in ("_base_", "synthetic"))


@pytest.fixture
def checkpoint(tmp_path):
    """Random weights of the synthetic detector saved as our runner saves them (state_dict + dataset_meta)."""
    from mmdet.apis import init_detector

    torch.manual_seed(0)
    model = init_detector(str(SYNTHETIC), device="cpu")
    path = tmp_path / "synthetic.pth"
    torch.save({"state_dict": model.state_dict(), "meta": {"dataset_meta": {"classes": CLASSES}}}, path)
    return str(path)


def _image(height=96, width=120):
    return np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)


def _check_prediction(sample, height, width, num_classes):
    from mmdet.structures import DetDataSample

    assert isinstance(sample, DetDataSample)
    pred = sample.pred_instances
    boxes = pred.bboxes
    assert boxes.ndim == 2 and boxes.shape[1] == 4 and len(boxes) > 0
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
    assert (boxes[:, 2:] >= boxes[:, :2]).all()
    assert ((pred.scores >= 0) & (pred.scores <= 1)).all() and len(pred.scores) == len(boxes)
    assert (pred.labels >= 0).all() and (pred.labels < num_classes).all()
    assert tuple(pred.masks.shape) == (len(boxes), height, width) and pred.masks.dtype == torch.bool


def test_init_detector_and_inference_detector_on_synthetic_config(checkpoint):
    from mmdet.apis import inference_detector, init_detector

    model = init_detector(str(SYNTHETIC), checkpoint, device="cpu")
    assert model.dataset_meta["classes"] == CLASSES
    image = _image()
    result = inference_detector(model, image)
    _check_prediction(result, 96, 120, num_classes=3)
    assert tuple(result.ori_shape) == (96, 120)
    batch = inference_detector(model, [image, _image(64, 80)])  # a list in, a list out
    _check_prediction(batch[1], 64, 80, num_classes=3)
    torch.testing.assert_close(batch[0].pred_instances.bboxes, result.pred_instances.bboxes)


def test_det_inferencer_matches_inference_detector(checkpoint):
    from mmdet.apis import DetInferencer, inference_detector, init_detector

    image = _image()
    expected = inference_detector(init_detector(str(SYNTHETIC), checkpoint, device="cpu"), image).pred_instances
    inferencer = DetInferencer(model=str(SYNTHETIC), weights=checkpoint, device="cpu", show_progress=False)
    out = inferencer(image, return_datasamples=True, no_save_vis=True)
    (sample,) = out["predictions"]
    _check_prediction(sample, 96, 120, num_classes=3)
    pred = sample.pred_instances
    torch.testing.assert_close(pred.bboxes, expected.bboxes)
    torch.testing.assert_close(pred.scores, expected.scores)
    assert torch.equal(pred.labels, expected.labels) and torch.equal(pred.masks, expected.masks)
    plain = inferencer(image, no_save_vis=True)["predictions"][0]  # the JSON-able form: class ids, boxes
    assert plain["labels"] == expected.labels.tolist()
    np.testing.assert_allclose(plain["bboxes"], expected.bboxes.numpy(), rtol=1e-5)


def test_init_detector_builds_every_real_config():
    """Each real-size config (COCO, 80 classes) builds on CPU with no checkpoint: our backbone under the
    config's detector, in eval mode, with no pretrained backbone to load."""
    from mmdet.apis import init_detector

    assert len(REAL_CONFIGS) >= 10
    for path in REAL_CONFIGS:
        model = init_detector(str(path), device="cpu")
        assert type(model.backbone).__name__ in ("ELSASwin", "SAN", "XResNet"), path
        assert not model.training and model.cfg.model.backbone.get("init_cfg") is None
