"""Shared by the mmdet / mmseg inference-API tests."""
import pytest


@pytest.fixture(autouse=True)
def isolated_mmengine_instances(fresh_mmengine_instances):
    """The inferencers register named global instances (their visualizer, default scope, ...); a later in-process
    tool run would otherwise get them back with this test's settings (e.g. no save_dir)."""
    yield
