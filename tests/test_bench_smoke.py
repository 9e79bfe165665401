"""The benchmark script runs end to end (tiny shape): it must never rot between GPU sessions."""

import os
import runpy

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "kernels_cpu.py")


@pytest.mark.slow
def test_cpu_kernel_benchmark_quick_run(tmp_path, capsys):
    main = runpy.run_path(BENCH, run_name="bench")["main"]
    csv_path = tmp_path / "rows.csv"
    assert main(["--quick", "--no-compile", "--csv", str(csv_path)]) == 0
    out = capsys.readouterr().out
    assert "seg_vs_segment_reduce" in out and "uniform_over_avgpool" in out
    rows = csv_path.read_text().splitlines()
    assert rows[0].startswith("device,") and len(rows) > 5


def test_cli_info(capsys):
    from lalm_fast.cli import main

    assert main(["info"]) == 0
    assert "cpu     ok" in capsys.readouterr().out


def test_cli_passes_options_through_to_the_benchmark(monkeypatch):
    from lalm_fast import cli

    seen = {}
    monkeypatch.setattr(cli, "_run_bench_script", lambda name, argv: seen.update(name=name, argv=argv) or 0)
    assert cli.main(["bench", "--quick", "--csv", ""]) == 0
    assert seen == {"name": "kernels_cpu.py", "argv": ["--quick", "--csv", ""]}
    assert cli.main(["bench", "kernels", "--dims", "41"]) == 0
    assert seen["argv"] == ["--dims", "41"]
    with pytest.raises(SystemExit):
        cli.main(["bench", "nope"])


def test_cli_reports_bad_paths_in_one_line(capsys, tmp_path):
    from lalm_fast.cli import main

    assert main(["eval", "--model", str(tmp_path), "--manifest", str(tmp_path / "missing.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lalm-fast eval: error:") and len(err.strip().splitlines()) == 1
