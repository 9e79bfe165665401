"""Build lalm_fast._C (C++ CPU kernels, plus the CUDA fallback when a CUDA build of torch and a
CUDA toolkit are present); ship the Triton kernels in kernels/ as lalm_fast.kernels and the
benchmark harness in bench/ as lalm_fast.bench (its committed results/ stay in the repository).

    pip install --no-build-isolation -e .     # torch must already be installed

FORCE_CUDA=1 builds the CUDA kernels even when no GPU is visible; FORCE_ONLY_CPU=1 skips them.
LALM_FAST_SANITIZE=1 builds the CPU kernels only, with AddressSanitizer and UBSan, into
build/sanitize/ and nowhere else (the normal build is untouched; scripts/sanitize_tier.sh
builds and tests it).
"""

import glob
import os
import runpy

from setuptools import find_packages, setup

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError as exc:  # build isolation would fetch a multi-GB CUDA torch; refuse instead
    raise SystemExit(
        "lalm-fast builds against your installed torch: install torch first, then run "
        "`pip install --no-build-isolation -e .`"
    ) from exc


SANITIZE = os.environ.get("LALM_FAST_SANITIZE") == "1"
SANITIZE_DIR = os.path.join("build", "sanitize")
# -O1 -g: readable reports; -fno-wrapv: Python's build flags make signed overflow wrap, which
# hides it from UBSan. The sanitizers run in the extension only (python and torch are not
# instrumented, so libasan is preloaded when it runs).
SANITIZE_FLAGS = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-wrapv", "-O1", "-g"]


def want_cuda() -> bool:
    if SANITIZE or os.environ.get("FORCE_ONLY_CPU") == "1":
        return False
    if os.environ.get("FORCE_CUDA") == "1":
        return True
    return torch.version.cuda is not None and CUDA_HOME is not None


def extension():
    cpu_sources = ["csrc/bindings.cpp"] + sorted(glob.glob("csrc/cpu/*.cpp"))
    # -fopenmp: at::parallel_for is an inline OpenMP loop; compiled without it, it silently runs
    # on one thread (the process shares torch's libgomp.so.1, so there is one thread pool).
    cxx_flags = ["-O3", "-std=c++17", "-fno-math-errno", "-fopenmp"]
    link_flags = ["-fopenmp"]
    if SANITIZE:
        cxx_flags, link_flags = cxx_flags + SANITIZE_FLAGS, link_flags + SANITIZE_FLAGS[:1]
    if not want_cuda():
        return CppExtension("lalm_fast._C", cpu_sources, extra_compile_args={"cxx": cxx_flags},
                            extra_link_args=link_flags)
    cuda_sources = sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp"))
    return CUDAExtension(
        "lalm_fast._C",
        cpu_sources + cuda_sources,
        define_macros=[("WITH_CUDA", None)],
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-std=c++17"]},
        extra_link_args=link_flags,
    )


class SanitizedBuild(BuildExtension):
    """build_ext of the sanitized extension: always into build/sanitize/, never in place."""

    def finalize_options(self):
        super().finalize_options()
        self.inplace = False
        self.build_lib = SANITIZE_DIR
        self.build_temp = os.path.join(SANITIZE_DIR, "temp")


# The extras live in lalm_fast/extras.py, which the CLI also reads to name the extra a command lacks.
EXTRAS = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "lalm_fast", "extras.py"))["EXTRAS"]

setup(
    name="lalm-fast",
    version="0.1.0",
    description="Fused audio-token compression (segment pooling, boundary detection) for audio LLMs",
    packages=find_packages(include=["lalm_fast", "lalm_fast.*"]) + ["lalm_fast.kernels", "lalm_fast.bench"],
    package_dir={"lalm_fast.kernels": "kernels", "lalm_fast.bench": "bench"},
    python_requires=">=3.10",
    install_requires=["torch>=2.6", "numpy"],
    extras_require=EXTRAS,
    ext_modules=[extension()],
    cmdclass={"build_ext": SanitizedBuild if SANITIZE else BuildExtension},
    entry_points={"console_scripts": ["lalm-fast=lalm_fast.cli:main"]},
)
