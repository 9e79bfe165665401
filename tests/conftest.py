"""Shared test setup.

The Triton interpreter must be switched on before anything imports triton, so it is set here,
first, on machines without a CUDA device (CI and developer laptops).
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci", max_examples=40, deadline=None, derandomize=True,
    # cpu_backend is a plain string fixture: safe to share across examples.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
settings.register_profile("dev", parent=settings.get_profile("ci"), max_examples=200, derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

from lalm_fast.ops import backends  # noqa: E402

CPU_BACKENDS = [name for name in ("torch", "cpu") if backends.is_available(name, "cpu")]


@pytest.fixture(params=CPU_BACKENDS)
def cpu_backend(request):
    return request.param


def pytest_collection_modifyitems(config, items):
    # Everything not in another tier is a unit test, so `-m unit` selects the default tier.
    tiers = {"fuzz", "triton_interp", "cuda_compile", "asset", "gpu", "slow", "packaging", "bench"}
    for item in items:
        if not tiers.intersection(item.keywords):
            item.add_marker(pytest.mark.unit)
