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


def _load_extension(path: str) -> None:
    """Test the C++ extension at ``path`` (the sanitized build of scripts/sanitize_tier.sh) in
    place of the in-place build: loaded as lalm_fast._C before anything imports that."""
    import importlib.util
    import sys

    import lalm_fast

    spec = importlib.util.spec_from_file_location("lalm_fast._C", path)
    if spec is None or not os.path.isfile(path):
        raise pytest.UsageError(f"LALM_FAST_EXTENSION={path} is not a built extension module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["lalm_fast._C"] = module
    lalm_fast._C = module


if os.environ.get("LALM_FAST_EXTENSION"):
    _load_extension(os.environ["LALM_FAST_EXTENSION"])

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


# The modules that test the C++ kernels: the sanitizer tier (`-m sanitize`,
# scripts/sanitize_tier.sh) runs them again against the extension built with ASan and UBSan.
# They stay in their own tiers too.
SANITIZE_MODULES = {"test_cpp_kernels.py", "test_ops.py", "test_detect.py", "test_bad_input.py",
                    "test_contract_cases.py", "test_kernel_ops.py", "test_fuzz.py"}


def pytest_collection_modifyitems(config, items):
    # Everything not in another tier is a unit test, so `-m unit` selects the default tier.
    tiers = {"fuzz", "triton_interp", "cuda_compile", "asset", "gpu", "slow", "packaging", "bench"}
    for item in items:
        if not tiers.intersection(item.keywords):
            item.add_marker(pytest.mark.unit)
        if item.path.name in SANITIZE_MODULES:
            item.add_marker(pytest.mark.sanitize)
