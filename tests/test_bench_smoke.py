"""The kernel benchmark runs end to end (tiny shape), the CLI dispatches to the benchmark modules,
and a missing optional dependency ends a command with one line naming its extra."""

import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_cpu_kernel_benchmark_quick_run(tmp_path, capsys):
    from lalm_fast.bench.kernels_cpu import main

    csv_path = tmp_path / "rows.csv"
    assert main(["--quick", "--no-compile", "--csv", str(csv_path)]) == 0
    out = capsys.readouterr().out
    assert "seg_vs_segment_reduce" in out and "uniform_over_avgpool" in out
    rows = csv_path.read_text().splitlines()
    assert rows[0].startswith("suite,run_id,date,device,") and len(rows) > 5
    assert all(row.startswith("kernels_cpu,") for row in rows[1:])


def test_cli_info(capsys):
    from lalm_fast.cli import main

    assert main(["info"]) == 0
    assert "cpu     ok" in capsys.readouterr().out


def test_cli_passes_options_through_to_the_benchmark(monkeypatch):
    from lalm_fast import cli

    calls = []
    monkeypatch.setattr(cli, "_run_suite", lambda name, argv: calls.append((name, argv)) or 0)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert cli.main(["bench", "kernels", "--dims", "41", "--csv", ""]) == 0
    assert calls.pop() == ("kernels_cpu", ["--dims", "41", "--csv", ""])
    assert cli.main(["bench", "e2e", "--durations", "10"]) == 0
    assert calls.pop() == ("e2e", ["--durations", "10"])
    # No suite: every suite on the default device, passing on only the options they share.
    assert cli.main(["bench", "--quick"]) == 0
    assert calls == [("kernels_cpu", ["--quick"]), ("e2e", ["--quick"])]
    calls.clear()
    assert cli.main(["bench"]) == 0
    assert calls == [("kernels_cpu", []), ("e2e", [])]
    calls.clear()
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)  # kernels = the GPU kernel benchmark there
    assert cli.main(["bench", "kernels", "--quick"]) == 0
    assert calls.pop() == ("bench_gpu", ["--quick"])
    assert cli.main(["bench", "kernels-cpu"]) == 0
    assert calls.pop() == ("kernels_cpu", [])
    for bad in (["bench", "nope"], ["bench", "--dims", "41"]):
        with pytest.raises(SystemExit):
            cli.main(bad)
    assert calls == []


def test_cli_bench_without_suite_reports_the_first_failure(monkeypatch):
    from lalm_fast import cli

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    ran = []
    monkeypatch.setattr(cli, "_run_suite", lambda name, argv: ran.append(name) or (3 if name == "kernels_cpu" else 1))
    assert cli.main(["bench"]) == 3
    assert ran == ["kernels_cpu", "e2e"]  # a failing suite does not stop the next


def test_cli_reports_bad_paths_in_one_line(capsys, tmp_path):
    from lalm_fast.cli import main

    assert main(["eval", "--model", str(tmp_path), "--manifest", str(tmp_path / "missing.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lalm-fast eval: error:") and len(err.strip().splitlines()) == 1


def test_results_go_to_the_checkout_or_the_current_directory(tmp_path, monkeypatch):
    from lalm_fast.bench import report

    monkeypatch.chdir(tmp_path)
    checkout = os.path.join(os.path.dirname(report.BENCH_DIR), "setup.py")
    expected = os.path.join(report.BENCH_DIR, "results") if os.path.exists(checkout) else str(tmp_path / "bench-results")
    assert report.results_dir() == expected
    monkeypatch.setattr(report, "BENCH_DIR", str(tmp_path / "site-packages" / "lalm_fast" / "bench"))
    assert report.results_dir() == str(tmp_path / "bench-results")  # an installed package: never site-packages


def _cli_without(module: str, *argv: str) -> subprocess.CompletedProcess:
    """``lalm-fast ARGV`` in a fresh interpreter where ``module`` cannot be imported."""
    code = f"import sys; sys.modules[{module!r}] = None; from lalm_fast.cli import main; sys.exit(main({list(argv)!r}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("module, argv, extra", [
    ("tqdm", ["demo"], "demo"),
    ("matplotlib", ["reproduce", "--dry-run"], "demo"),
    ("accelerate", ["train", "--config", "configs/tiny.json"], "train"),
    ("jiwer", ["eval", "--model", "m", "--manifest", "m.jsonl"], "train"),
    ("transformers", ["bench", "e2e", "--quick"], "bench"),
])
def test_a_missing_optional_dependency_is_one_line_naming_the_extra(module, argv, extra):
    result = _cli_without(module, *argv)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"lalm-fast {' '.join(argv[:2]) if argv[0] == 'bench' else argv[0]} needs ")
    assert module in lines[0] and lines[0].endswith(f'pip install "lalm-fast[{extra}]"'), lines[0]


def test_an_import_failing_inside_a_command_is_mapped_to_its_extra(monkeypatch, capsys):
    from lalm_fast import cli

    def run(argv):
        raise ModuleNotFoundError("No module named 'yaml'", name="yaml")  # only YAML configs import it

    monkeypatch.setitem(cli.COMMANDS, "train", run)
    assert cli.main(["train", "--config", "c.yaml"]) == 2
    assert capsys.readouterr().err.strip() == 'lalm-fast train needs yaml: pip install "lalm-fast[train]"'

    def bug(argv):
        raise ModuleNotFoundError("No module named 'lalm_fast.nope'", name="lalm_fast.nope")

    monkeypatch.setitem(cli.COMMANDS, "train", bug)
    with pytest.raises(ModuleNotFoundError):  # not an optional dependency: a real bug keeps its traceback
        cli.main(["train", "--config", "c.yaml"])


def test_setup_py_declares_every_extra_the_cli_names():
    from lalm_fast import extras

    assert set(extras.COMMAND_EXTRAS.values()) - {None} <= set(extras.EXTRAS)
    assert set(extras.EXTRAS["all"]) == {r for name, reqs in extras.EXTRAS.items() if name != "all" for r in reqs}
