"""Build a timm classifier by name (localattn's models are registered by importing `localattn.cls`)."""
import difflib

import timm
from timm.data import resolve_data_config

from . import models  # noqa: F401  (registers elsa_swin_*, san*, xresnet*)
from .options import ConfigError


def check_model_name(name):
    """Raise ConfigError naming close matches (and localattn's models) when `name` is not a timm model."""
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.5)
        ours = [n for n in timm.list_models() if n.startswith(("elsa_swin", "san", "xresnet"))]
        raise ConfigError(f"--model {name!r} is not a registered timm model"
                          + (f"; close matches: {', '.join(close)}" if close else "")
                          + f"; localattn models: {', '.join(ours)}")


def create_classifier(name, num_classes, model_kwargs=None, drop_rate=None, drop_path_rate=None):
    """timm.create_model with a clear error for unknown names and for kwargs the model does not take;
    None-valued options keep the model default."""
    check_model_name(name)
    options = {k: v for k, v in (("drop_rate", drop_rate), ("drop_path_rate", drop_path_rate)) if v is not None}
    try:
        return timm.create_model(name, num_classes=num_classes, **options, **(model_kwargs or {}))
    except TypeError as err:  # an argument of another architecture, e.g. embed_dim for a SAN
        raise ConfigError(f"--model {name} does not take the arguments {sorted({**options, **(model_kwargs or {})})} "
                          f"(--model-kwargs / the checkpoint's recorded model_kwargs): {err}") from None


def data_config_for(model, img_size=None, crop_pct=None, interpolation=None, mean=None, std=None):
    """Input size, eval crop, interpolation and normalisation: explicit values, else the model's defaults."""
    overrides = {"img_size": img_size, "crop_pct": crop_pct, "interpolation": interpolation, "mean": mean, "std": std}
    config = resolve_data_config({k: v for k, v in overrides.items() if v is not None}, model=model)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items()}
