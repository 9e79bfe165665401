"""The sdist carries everything a build needs, and a non-editable install of it works on its own.

Builds the sdist from this checkout, installs it into a fresh virtual environment (no system
site-packages: torch, numpy and the build tools are installed there first, then the sdist with
--no-build-isolation, which compiles lalm_fast._C), and runs the installed package from a
temporary directory: the imports, the C++ CPU backend, ``lalm-fast bench kernels --quick``
(results land in that directory, not in site-packages) and the one-line message of a command
whose extra is not installed. Takes minutes (the C++ build): marked ``packaging``; part of the
default run (and so of CI), ``-m "not packaging"`` leaves it out.
"""

import os
import subprocess
import sys
import tarfile
import textwrap

import pytest
import torch

pytestmark = pytest.mark.packaging

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD_TOOLS = ["numpy", "setuptools>=69", "wheel", "ninja"]


def _run(args, cwd, timeout=900, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, **kwargs)


def _checked(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"{result.args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> str:
    dist = tmp_path_factory.mktemp("dist")
    _checked(_run([sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(dist)], REPO,
                  env={**os.environ, "FORCE_ONLY_CPU": "1"}))
    (archive,) = dist.iterdir()
    return str(archive)


@pytest.fixture(scope="module")
def venv(tmp_path_factory, sdist) -> str:
    """bin/ of a fresh venv with torch (the version running this test) and the sdist installed."""
    root = tmp_path_factory.mktemp("venv")
    _checked(_run([sys.executable, "-m", "venv", str(root)], root))
    pip = [str(root / "bin" / "python"), "-m", "pip", "install", "-q"]
    torch_version = torch.__version__.split("+")[0]
    installed = _run(pip + [f"torch=={torch_version}", *BUILD_TOOLS], root)
    if installed.returncode != 0:
        pytest.skip(f"cannot install torch {torch_version} into a fresh venv here: {installed.stderr[-500:]}")
    _checked(_run(pip + ["--no-build-isolation", sdist], root, env={**os.environ, "FORCE_ONLY_CPU": "1"}))
    return str(root / "bin")


def _checkout_files(folder: str, suffixes: tuple) -> set:
    return {os.path.relpath(os.path.join(d, f), REPO) for d, _, files in os.walk(os.path.join(REPO, folder))
            for f in files if f.endswith(suffixes)}


def test_sdist_holds_the_sources_and_not_the_results(sdist):
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    wanted = (_checkout_files("csrc", (".cpp", ".h", ".cu", ".cuh")) | _checkout_files("configs", (".json",))
              | {"kernels/__init__.py", "bench/__init__.py", "bench/e2e.py", "bench/report.py", "README.md",
                 "requirements.txt", "requirements-dev.txt", "lalm_fast/extras.py", "setup.py", "MANIFEST.in"})
    assert not wanted - names
    assert not [name for name in names if name.startswith("bench/results") or name.endswith((".so", ".pyc"))]


# A GPU call (the device tool) carries at most 64 MiB of working tree; committed adapters and
# scores must leave room for uncommitted work and build outputs carried beside them.
TRACKED_LIMIT_MIB = 60


def test_the_tracked_files_fit_in_one_gpu_call():
    listed = _run(["git", "ls-files", "-z"], REPO)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    paths = [os.path.join(REPO, name) for name in listed.stdout.split("\0") if name]
    sizes = sorted(((os.path.getsize(p), os.path.relpath(p, REPO)) for p in paths if os.path.isfile(p)), reverse=True)
    total = sum(size for size, _ in sizes) / 2**20
    assert total < TRACKED_LIMIT_MIB, f"tracked files: {total:.1f} MiB; largest: {sizes[:5]}"


def test_installed_package_imports_and_runs_the_cpu_backend(venv, tmp_path):
    code = textwrap.dedent("""
        import lalm_fast, lalm_fast.ops as ops, lalm_fast.kernels, lalm_fast.bench, lalm_fast._C
        import torch
        assert "site-packages" in lalm_fast.__file__ and "site-packages" in lalm_fast.bench.__file__
        assert ops.backends.is_available("cpu", "cpu"), ops.backends.available()
        x = torch.randn(2, 30, 8)
        got = ops.uniform_pool(x, torch.tensor([30, 17]), 3, backend="cpu")
        want = ops.uniform_pool(x, torch.tensor([30, 17]), 3, backend="torch")
        torch.testing.assert_close(got.values, want.values)
        print("ok", lalm_fast.bench.__file__)
    """)
    result = _checked(_run([os.path.join(venv, "python"), "-c", code], tmp_path))
    assert result.stdout.startswith("ok")


def test_installed_kernel_benchmark_writes_to_the_current_directory(venv, tmp_path):
    result = _checked(_run([os.path.join(venv, "lalm-fast"), "bench", "kernels", "--quick", "--no-compile"],
                           tmp_path, timeout=300))
    assert "seg_vs_segment_reduce" in result.stdout
    rows = (tmp_path / "bench-results" / "kernels_cpu.csv").read_text().splitlines()
    assert rows[0].startswith("suite,run_id,") and len(rows) > 5
    site = _checked(_run([os.path.join(venv, "python"), "-c", "import lalm_fast.bench as b; print(b.__path__[0])"],
                         tmp_path)).stdout.strip()
    assert not os.path.exists(os.path.join(site, "results"))


@pytest.mark.parametrize("argv, extra", [(["demo"], "demo"), (["bench", "e2e", "--quick"], "bench")])
def test_a_command_without_its_extra_says_which_to_install(venv, tmp_path, argv, extra):
    result = _run([os.path.join(venv, "lalm-fast"), *argv], tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"lalm-fast {' '.join(argv[:2]) if argv[0] == 'bench' else argv[0]} needs ")
    assert line.endswith(f'pip install "lalm-fast[{extra}]"'), line
