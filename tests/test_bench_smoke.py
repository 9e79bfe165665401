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
    assert rows[0].startswith("suite,run_id,date,device,") and len(rows) > 5
    assert all(row.startswith("kernels_cpu,") for row in rows[1:])


def test_cli_info(capsys):
    from lalm_fast.cli import main

    assert main(["info"]) == 0
    assert "cpu     ok" in capsys.readouterr().out


def test_cli_passes_options_through_to_the_benchmark(monkeypatch):
    from lalm_fast import cli

    calls = []
    monkeypatch.setattr(cli, "_run_bench_script", lambda name, argv: calls.append((name, argv)) or 0)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert cli.main(["bench", "kernels", "--dims", "41", "--csv", ""]) == 0
    assert calls.pop() == ("kernels_cpu.py", ["--dims", "41", "--csv", ""])
    assert cli.main(["bench", "e2e", "--durations", "10"]) == 0
    assert calls.pop() == ("e2e.py", ["--durations", "10"])
    # No suite: every suite on the default device, passing on only the options they share.
    assert cli.main(["bench", "--quick"]) == 0
    assert calls == [("kernels_cpu.py", ["--quick"]), ("e2e.py", ["--quick"])]
    calls.clear()
    assert cli.main(["bench"]) == 0
    assert calls == [("kernels_cpu.py", []), ("e2e.py", [])]
    calls.clear()
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)  # kernels = the GPU kernel benchmark there
    assert cli.main(["bench", "kernels", "--quick"]) == 0
    assert calls.pop() == ("bench_gpu.py", ["--quick"])
    assert cli.main(["bench", "kernels-cpu"]) == 0
    assert calls.pop() == ("kernels_cpu.py", [])
    for bad in (["bench", "nope"], ["bench", "--dims", "41"]):
        with pytest.raises(SystemExit):
            cli.main(bad)
    assert calls == []


def test_cli_bench_without_suite_reports_the_first_failure(monkeypatch):
    from lalm_fast import cli

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    ran = []
    monkeypatch.setattr(cli, "_run_bench_script",
                        lambda name, argv: ran.append(name) or (3 if name == "kernels_cpu.py" else 1))
    assert cli.main(["bench"]) == 3
    assert ran == ["kernels_cpu.py", "e2e.py"]  # a failing suite does not stop the next


def test_cli_reports_bad_paths_in_one_line(capsys, tmp_path):
    from lalm_fast.cli import main

    assert main(["eval", "--model", str(tmp_path), "--manifest", str(tmp_path / "missing.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lalm-fast eval: error:") and len(err.strip().splitlines()) == 1
