"""Shared by the mmdet / mmseg inference-API tests."""
import pytest


def _manager_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _manager_subclasses(sub)


@pytest.fixture(autouse=True)
def fresh_mmengine_instances():
    """The inferencers register named global instances (their visualizer, default scope, ...); a later in-process
    tool run in the same session would otherwise get that instance back, with this test's settings (e.g. no
    save_dir). Drops every mmengine `ManagerMixin` instance created during the test."""
    from mmengine.utils import ManagerMixin
    before = {cls: set(cls._instance_dict) for cls in _manager_subclasses(ManagerMixin)}
    yield
    for cls in _manager_subclasses(ManagerMixin):
        for name in set(cls._instance_dict) - before.get(cls, set()):
            del cls._instance_dict[name]
