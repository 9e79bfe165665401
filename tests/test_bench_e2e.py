"""The end-to-end benchmark (lalm_fast.bench.e2e) and the shared result format (lalm_fast.bench.report).

The tiny preset runs the whole benchmark in seconds; the qwen2-audio-7b preset's code path runs
at a scaled-down size (``--scale mini``), so the first full-size GPU run has already been
exercised on a CPU; its full-size sizes are checked on the meta device (no memory).
"""

import csv
import os

import pytest
import torch

pytest.importorskip("transformers")

from lalm_fast.bench import e2e, e2e_measure, e2e_models, report  # noqa: E402

BENCH = os.path.dirname(os.path.abspath(report.__file__))


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _by_compressor(rows, path=None):
    return {r["compressor"]: r for r in rows if path is None or r["path"] == path}


# ---------------------------------------------------------------------------------------------
# The benchmark end to end


@pytest.mark.parametrize("argv, message", [
    (["--durations", "-5"], "--durations must be positive seconds"),
    (["--durations", "nan"], "--durations must be positive seconds"),
    (["--compressors", "bogus:9"], "--compressors 'bogus:9': unknown compressor kind 'bogus'"),
    (["--repeats", "0"], "--repeats >= 1"),
    (["--threads", "0"], "--threads must be >= 1"),
    (["--device", "tpu"], "--device"),
] + ([] if torch.cuda.is_available() else [(["--device", "cuda"], "--device 'cuda' cannot run here")]))
def test_bad_arguments_give_one_clear_error(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        e2e.parse_args(["--preset", "tiny", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_tiny_preset_writes_rows_table_and_plot(tmp_path, capsys):
    out = tmp_path / "e2e.csv"
    argv = ["--preset", "tiny", "--durations", "10", "40", "--compressors", "none", "uniform:3", "segment:rate=3",
            "--new-tokens", "3", "--repeats", "1", "--csv", str(out)]
    assert e2e.main(argv) == 0
    printed = capsys.readouterr().out
    assert "against none" in printed and "random weights" in printed

    with open(out, newline="") as f:
        header = next(csv.reader(f))
    assert header == report.COMMON_FIELDS + e2e.E2E_FIELDS
    rows = _rows(out)
    assert len(rows) == 6 and all(r["status"] == "ok" and r["suite"] == "e2e" for r in rows)
    assert len({r["run_id"] for r in rows}) == 1
    for seconds, windows in (("10", 1), ("40", 2)):  # 40 s goes through two 30 s windows
        runs = _by_compressor([r for r in rows if r["duration_s"] == seconds])
        none = runs["none"]
        assert int(none["windows"]) == windows
        assert int(none["audio_tokens"]) == int(none["encoder_frames"]) == int(seconds) * 50  # 50 Hz, no compression
        for spec in ("uniform:3", "segment:rate=3"):
            row = runs[spec]
            assert int(row["audio_tokens"]) == -(-int(none["audio_tokens"]) // 3)
            assert int(row["audio_tokens"]) < int(none["audio_tokens"])
            text_tokens = int(none["llm_tokens"]) - int(none["audio_tokens"])
            assert int(row["llm_tokens"]) - int(row["audio_tokens"]) == text_tokens
            # KV bytes come from the real cache: proportional to the LM's sequence length
            assert int(row["kv_bytes"]) < int(none["kv_bytes"])
            per_token = int(none["kv_bytes"]) / int(none["llm_tokens"])
            assert int(row["kv_bytes"]) == per_token * int(row["llm_tokens"])
        for row in runs.values():
            assert float(row["ttft_ms"]) >= float(row["encoder_ms"]) + float(row["prefill_ms"]) > 0
            assert float(row["decode_tok_s"]) > 0 and row["mem_method"]
            assert float(row["llm_peak_extra_mb"]) >= 0
    assert os.path.getsize(tmp_path / "e2e.png") > 10_000
    table = (tmp_path / "e2e.md").read_text()
    assert "| audio_lm | 40 | uniform:3 |" in table and "Against `none`" in table and "random weights" in table


def test_budget_records_skipped_configurations(tmp_path):
    out = tmp_path / "e2e.csv"
    argv = ["--preset", "tiny", "--durations", "10", "--compressors", "none", "uniform:2", "--new-tokens", "1",
            "--repeats", "1", "--budget-s", "0", "--csv", str(out), "--no-plot"]
    assert e2e.main(argv) == 0
    rows = _rows(out)
    assert [r["status"].split(":")[0] for r in rows] == ["skipped", "skipped"]
    assert not (tmp_path / "e2e.png").exists()


@pytest.mark.slow
def test_qwen2_audio_preset_code_path_at_mini_scale(tmp_path):
    """The GPU preset's code, bf16, at a tiny width: both the integration and AudioLM paths, a
    fixed-rate and a content-adaptive compressor, two 30 s windows."""
    out = tmp_path / "e2e.csv"
    argv = ["--preset", "qwen2-audio-7b", "--scale", "mini", "--device", "cpu", "--durations", "40",
            "--compressors", "none", "uniform:3", "segment:prominence=0.05", "--new-tokens", "2", "--repeats", "1",
            "--csv", str(out), "--no-plot"]
    assert e2e.main(argv) == 0
    rows = _rows(out)
    assert {r["path"] for r in rows} == {"qwen2_audio", "audio_lm"}
    assert all(r["status"] == "ok" and r["dtype"] == "bfloat16" and r["weights"] == "random" for r in rows)
    native, audio_lm = _by_compressor(rows, "qwen2_audio"), _by_compressor(rows, "audio_lm")
    # Qwen2-Audio's tower ends in AvgPool1d(2): 25 Hz; both paths see the same audio tokens
    assert int(native["none"]["audio_tokens"]) == int(audio_lm["none"]["audio_tokens"]) == 40 * 25
    assert int(native["uniform:3"]["audio_tokens"]) == int(audio_lm["uniform:3"]["audio_tokens"]) == -(-1000 // 3)
    for runs in (native, audio_lm):
        assert int(runs["segment:prominence=0.05"]["audio_tokens"]) < int(runs["none"]["audio_tokens"])
        assert int(runs["uniform:3"]["kv_bytes"]) < int(runs["none"]["kv_bytes"])


def test_qwen2_audio_7b_sizes_build_the_published_architecture():
    """The full-size config, instantiated on the meta device: ~8.4 B parameters, sdpa-ready."""
    from transformers import Qwen2AudioForConditionalGeneration

    sizes = e2e_models.QWEN2_AUDIO_7B
    config = e2e_models.qwen2_audio_config(sizes)
    with torch.device("meta"):
        model = Qwen2AudioForConditionalGeneration(config)
    params = sum(p.numel() for p in model.parameters())
    assert 8.3e9 < params < 8.5e9
    tower, lm = model.model.audio_tower.config, model.model.language_model.config
    assert (tower.d_model, tower.encoder_layers, tower.encoder_attention_heads) == (1280, 32, 20)
    assert tower.encoder_ffn_dim == 5120
    assert (tower.num_mel_bins, tower.max_source_positions) == (128, 1500)
    assert (lm.hidden_size, lm.num_hidden_layers, lm.num_key_value_heads, lm.vocab_size) == (4096, 32, 32, 156032)
    # 10 min of audio at 25 Hz plus the prompt fits the raised position limit
    assert lm.max_position_embeddings >= 600 * 25 + 100
    mini = e2e_models.QWEN2_AUDIO_MINI
    assert mini["audio"]["max_source_positions"] == 1500 and mini["text"]["vocab_size"] == 156032


# ---------------------------------------------------------------------------------------------
# Pieces


def test_kv_cache_bytes_counts_the_real_tensors():
    from lalm_fast.models.tiny import tiny_lm

    lm = tiny_lm().eval()  # 2 layers, 2 KV heads of 32 / 4 = 8 dims
    with torch.inference_mode():
        out = lm(input_ids=torch.ones(1, 7, dtype=torch.long), use_cache=True)
    nbytes, tokens = e2e_measure.kv_cache_bytes(out.past_key_values)
    assert tokens == 7 and nbytes == 2 * 2 * 2 * 7 * 8 * 4


def test_memory_meter_sees_a_stage_allocation():
    meter = e2e_measure.MemoryMeter(torch.device("cpu"))
    meter.start()
    encoder_side = torch.ones(16 * 2 ** 20 // 4)       # 16 MiB
    meter.mark()
    del encoder_side
    llm_side = torch.ones(96 * 2 ** 20 // 4)           # 96 MiB, touched
    result = meter.stop()
    del llm_side
    assert 80 < result["llm_peak_extra_mb"] < 400, result
    if meter.method == "rss_hwm":  # the high-water mark is reset per stage
        assert 8 < result["enc_peak_extra_mb"] < 80, result


def test_ratios_and_targets_are_against_none_of_the_same_run():
    rows = [{"path": "p", "duration_s": 600, "compressor": c, "status": "ok", "audio_tokens": t, "prefill_ms": ms,
             "ttft_ms": ms + 10, "kv_bytes": 10 * t, "llm_peak_extra_mb": t / 10, "decode_tok_s": 10,
             "compressor_ms": 0.1, "encoder_ms": 100}
            for c, t, ms in (("none", 3000, 900.0), ("uniform:3", 1000, 100.0))]
    (ratio,) = [r for r in e2e.ratios(rows) if r["compressor"] == "uniform:3"]
    assert ratio["prefill_speedup"] == 9 and ratio["kv_ratio"] == 3 and ratio["compressor_pct"] == pytest.approx(0.1)
    checks = {c["target"]: c["result"] for c in e2e.target_checks([ratio], "cpu")}
    assert checks["prefill speedup >= 2.7"] == "ok" and checks["compressor % of encoder <= 3"] == "ok"
    assert not any(target.startswith("TTFT") for target in checks)  # a GPU-only target


# ---------------------------------------------------------------------------------------------
# report


def test_append_rows_writes_the_header_once_and_refuses_other_layouts(tmp_path):
    path = str(tmp_path / "r.csv")
    common = report.common_fields("unit")
    assert list(common) == report.COMMON_FIELDS and common["lalm_fast"]
    report.append_rows(path, [{**common, "a": 1, "b": 0.5}])
    report.append_rows(path, [{**common, "a": 2, "b": float("nan")}])
    rows = _rows(path)
    assert [r["a"] for r in rows] == ["1", "2"] and rows[1]["b"] == ""
    assert open(path).read().count("suite,") == 1
    with pytest.raises(ValueError, match="columns"):
        report.append_rows(path, [{**common, "c": 1}])
    assert sorted(os.listdir(tmp_path)) == ["r.csv"]  # no temporary files left behind


def test_markdown_table():
    table = report.markdown_table([{"x": "a", "ms": 1.23456}, {"x": "b", "ms": 10}], ["x", "ms"], ["name", "ms"],
                                  formats={"ms": ".1f"})
    assert table.splitlines() == ["| name | ms |", "|---|---:|", "| a | 1.2 |", "| b | 10.0 |"]


def test_plot_handles_both_suites(tmp_path):
    kernels = os.path.join(BENCH, "results", "kernels_cpu.csv")
    assert _rows(kernels)[0]["suite"] == "kernels_cpu"
    assert report.main(["plot", kernels, "--out", str(tmp_path / "k.png")]) == 0
    assert os.path.getsize(tmp_path / "k.png") > 10_000
    e2e_csv = tmp_path / "e2e.csv"
    common = report.common_fields("e2e")
    rows = [{**common, "preset": "t", "path": "audio_lm", "duration_s": d, "compressor": c, "status": "ok",
             "ttft_ms": d * k, "prefill_ms": d * k / 2, "kv_bytes": d * k * 1e5, "llm_peak_extra_mb": d * k}
            for d in (10, 30, 120) for c, k in (("none", 3), ("uniform:3", 1))]
    report.append_rows(str(e2e_csv), rows)
    assert report.main(["plot", str(e2e_csv), "--out", str(tmp_path / "e.png")]) == 0
    assert os.path.getsize(tmp_path / "e.png") > 10_000
