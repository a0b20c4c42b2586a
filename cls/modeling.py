"""Build a timm classifier by name (localattn's models are registered by importing `localattn.cls`)."""
import timm
from timm.data import resolve_data_config

from . import models  # noqa: F401  (registers elsa_swin_*, san*, xresnet*)


def create_classifier(name, num_classes, model_kwargs=None, drop_rate=None, drop_path_rate=None):
    """timm.create_model with a clear error for unknown names; None-valued options keep the model default."""
    if not timm.is_model(name):
        ours = [n for n in timm.list_models() if n.startswith(("elsa_swin", "san", "xresnet"))]
        raise ValueError(f"--model {name!r} is not a registered timm model; localattn models: {ours}")
    options = {k: v for k, v in (("drop_rate", drop_rate), ("drop_path_rate", drop_path_rate)) if v is not None}
    return timm.create_model(name, num_classes=num_classes, **options, **(model_kwargs or {}))


def data_config_for(model, img_size=None, crop_pct=None, interpolation=None, mean=None, std=None):
    """Input size, eval crop, interpolation and normalisation: explicit values, else the model's defaults."""
    overrides = {"img_size": img_size, "crop_pct": crop_pct, "interpolation": interpolation, "mean": mean, "std": std}
    config = resolve_data_config({k: v for k, v in overrides.items() if v is not None}, model=model)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items()}
