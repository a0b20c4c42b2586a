"""mmseg's own inference APIs accept our configs: `init_model` + `inference_model` and `MMSegInferencer`
(conftest.py drops the global mmengine instances they create)."""
from pathlib import Path

import numpy as np
import torch

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "seg" / "synthetic" / "upernet_elsa_nano_synthetic.py"


def test_inference_model_and_inferencer_on_synthetic_config():
    from mmseg.apis import MMSegInferencer, inference_model, init_model

    torch.manual_seed(0)
    image = np.random.default_rng(0).integers(0, 255, (48, 72, 3), dtype=np.uint8)
    model = init_model(str(CONFIG), device="cpu")
    result = inference_model(model, image)
    assert tuple(result.pred_sem_seg.data.shape) == (1, 48, 72)
    assert int(result.pred_sem_seg.data.max()) < 4  # the config's 4 classes

    inferencer = MMSegInferencer(model=str(CONFIG), device="cpu")
    out = inferencer(image, return_datasamples=True)
    assert tuple(out.pred_sem_seg.data.shape) == (1, 48, 72)
