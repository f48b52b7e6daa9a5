"""Fixtures for the dashboard tests, on the demo experiment that conftest's ``demo_cache`` pre-builds."""

from __future__ import annotations

import pytest

from malle.experiment import Experiment, ExperimentConfig, Results

MISSING_WEIGHTS = "/nonexistent/resnet50.pth"  # makes "ResNet-50 unavailable" independent of the machine


@pytest.fixture(scope="session")
def demo_env(demo_cache):
    """For the whole session: the app's cache is the pre-built demo cache, and ResNet-50 has no weights."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MALLE_CACHE", str(demo_cache))
        patch.setenv("MALLE_RESNET50_WEIGHTS", MISSING_WEIGHTS)
        yield demo_cache


@pytest.fixture(scope="session")
def demo_results(demo_env) -> Results:
    """The dashboard's default experiment, loaded from the cache (no recomputation)."""
    results = Experiment(ExperimentConfig(n=100), demo_env).run()
    assert results.timings()["cached"].all(), "demo_cache should hold every stage"
    return results
