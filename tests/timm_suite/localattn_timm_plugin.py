"""pytest plugin that runs timm's own `tests/test_models.py` (unmodified, from the sdist of the installed timm)
on the localattn models: `import localattn` registers them before timm's file collects its model lists, and
only the items parametrised with one of our model names are kept (timm's own filters still apply).

Used by `make timm-suite` (part of `make test`): `pytest -p localattn_timm_plugin <sdist>/tests/test_models.py`.
"""
import localattn  # noqa: F401  (registers the timm models)
from localattn.models import registered_models


def pytest_collection_modifyitems(config, items):
    ours = set(registered_models())
    keep = [item for item in items if getattr(item, "callspec", None) and item.callspec.params.get("model_name") in ours]
    config.hook.pytest_deselected(items=[item for item in items if item not in keep])
    items[:] = keep
