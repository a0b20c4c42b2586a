"""timm glue shared by the localattn model families: build through timm with our checkpoint converter."""
from timm.models import build_model_with_cfg

from localattn.convert import convert_state_dict, strip_prefixes, unwrap_state_dict


def build_timm_model(model_cls, variant, pretrained, family, **kwargs):
    """`build_model_with_cfg` with checkpoints through the `family` converter; features via forward_intermediates."""
    def checkpoint_filter_fn(state_dict, model):
        return convert_state_dict(strip_prefixes(unwrap_state_dict(state_dict)), family, model)

    return build_model_with_cfg(model_cls, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                feature_cfg=dict(feature_cls="getter", out_indices=(0, 1, 2, 3, 4)), **kwargs)
