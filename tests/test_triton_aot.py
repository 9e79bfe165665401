"""Ahead-of-time compilation of every Triton kernel for H100 (sm_90) on a CPU machine.

``triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 32))`` lowers the kernels
through TTIR -> TTGIR -> LLVM -> PTX -> cubin without a GPU. That
catches what the interpreter cannot (bf16 typing, lowering errors, register pressure).
Registers and spills come from ``cuobjdump --dump-resource-usage`` on the cubin (Triton
only learns ``n_regs`` / ``n_spills`` when it loads a binary on a device).

The compilation runs in a subprocess without ``TRITON_INTERPRET`` (the conftest sets it
for this process, and under it ``triton.jit`` returns interpreted functions).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    r'''
    import importlib, importlib.util, json, os, re, shutil, subprocess, sys, tempfile, traceback
    sys.path.insert(0, sys.argv[1])
    repo = sys.argv[1]
    mode = sys.argv[2]  # "fixed" or "all"
    assert "TRITON_INTERPRET" not in os.environ
    try:
        import triton
        from triton.backends.compiler import GPUTarget
    except Exception as exc:
        print(json.dumps({"skip": f"triton not importable: {exc}"})); sys.exit(0)
    try:
        kernels = importlib.import_module("lalm_fast.kernels")
    except ModuleNotFoundError:
        spec = importlib.util.spec_from_file_location(
            "lalm_fast.kernels", os.path.join(repo, "kernels", "__init__.py"),
            submodule_search_locations=[os.path.join(repo, "kernels")])
        kernels = importlib.util.module_from_spec(spec)
        sys.modules["lalm_fast.kernels"] = kernels
        spec.loader.exec_module(kernels)
    sp = importlib.import_module("lalm_fast.kernels.span_mean")
    bd = importlib.import_module("lalm_fast.kernels.boundary_scores")
    sg = importlib.import_module("lalm_fast.kernels.compress")
    dk = importlib.import_module("lalm_fast.kernels.detect_boundaries")
    ss = importlib.import_module("lalm_fast.kernels.segment_spans")

    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(cuobjdump):
        cuobjdump = shutil.which("cuobjdump")

    def usage(cubin):
        if not cuobjdump:
            return None, None
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(cubin); f.flush()
            out = subprocess.run([cuobjdump, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
        m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", out)
        if not m:
            return None, None
        # spilled registers live in local memory (LOCAL bytes per thread)
        return int(m.group(1)), int(m.group(4))

    TY = {"fp32": "fp32", "fp16": "fp16", "bf16": "bf16", "fp64": "fp64"}
    target = GPUTarget("cuda", 90, 32)

    def compile_one(name, fn, signature, constexprs, num_warps):
        for k in constexprs:
            signature[k] = "constexpr"
        hints = {k: v.split(":")[1] for k, v in signature.items() if ":" in v}
        sig = {k: v.split(":")[0] for k, v in signature.items()}
        attrs = {(fn.arg_names.index(k),): [["tt.divisibility", 16]] for k in hints}
        src = triton.compiler.ASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs)
        rec = {"kernel": name, "config": {**{k: str(v) if hasattr(v, "primitive_bitwidth") else v
                                             for k, v in constexprs.items()}, "num_warps": num_warps}}
        try:
            k = triton.compile(src, target=target, options={"num_warps": num_warps})
            rec["ptx_bytes"] = len(k.asm.get("ptx", ""))
            rec["cubin_bytes"] = len(k.asm.get("cubin", b""))
            rec["n_regs"], rec["spill_bytes"] = usage(k.asm["cubin"])
        except Exception as exc:
            rec["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        print(json.dumps(rec), flush=True)

    dtypes = ["fp32", "fp16", "bf16", "fp64"]
    D, bucket = 1280, 4  # the Whisper-large case, rate 4
    for dt in dtypes:
        acc = "fp64" if dt == "fp64" else "fp32"
        fp64 = dt == "fp64"
        fwd_sig = lambda: {"x_ptr": f"*{dt}:16", "starts_ptr": "*i64:16", "ends_ptr": "*i64:16", "out_ptr": f"*{dt}:16",
                           "ws_ptr": f"*{acc}:16", "R": "i32", "S": "i32", "D": "i32:16", "stride_xr": "i32:16",
                           "stride_xt": "i32:16", "NSPLIT": "i32", "LEN_BUCKET": "i32", "lengths_ptr": "*i64:16",
                           "counts_ptr": "*i64:16", "T": "i32", "K": "i32", "WIDTH": "i32",
                           "seg_counts_ptr": "*i64:16", "positions_ptr": "*i64:16", "spans_ptr": "*i64:16",
                           "cu_out_ptr": "*i64:16", "B": "i32"}
        bwd_sig = lambda: {"grad_ptr": f"*{dt}:16", "starts_ptr": "*i64:16", "ends_ptr": "*i64:16", "out_ptr": f"*{dt}:16",
                           "S": "i32", "T": "i32", "D": "i32:16", "NSPLIT": "i32", "LEN_BUCKET": "i32"}
        fwd_cfgs = [sp._fixed_fwd_config(D, bucket), sp._fixed_fwd_config(D, 256)]
        bwd_cfgs = [sp._fixed_bwd_config(D, bucket)]
        bd_cfgs = [bd._fixed_config(D)]
        if mode == "all" and dt == "bf16":
            fwd_cfgs = [dict(BLOCK_S=s, BLOCK_D=d, UNROLL=u, num_warps=w) for s, d, u, w in sp._FWD_CONFIGS]
            bwd_cfgs = [dict(BLOCK_S=s, BLOCK_T=t, BLOCK_D=d, num_warps=w) for s, t, d, w in sp._BWD_CONFIGS]
            bd_cfgs = [dict(BLOCK_T=t, BLOCK_D=d, num_warps=w) for t, d, w in bd._CONFIGS]
        for cfg in fwd_cfgs:
            cfg = dict(cfg); w = cfg.pop("num_warps")
            for split in (False, True):
                # spans loaded, or computed: windows (uniform_pool, downsample), packed windows, packed starts
                for spans, label in ((sp.LOADED, ""), (sp.WINDOWS, ",windows"), (sp.PACKED_WINDOWS, ",packed"),
                                     (sp.PACKED_STARTS, ",packed-starts")):
                    compile_one(f"span_mean_fwd[{dt}{label}]", sp._span_mean_fwd_kernel, fwd_sig(),
                                {**cfg, "SPLIT": split, "ACC_FP64": fp64, "SPANS": spans, "BLOCK_B": 64}, w)
        compile_one(f"span_mean_combine[{dt}]", sp._span_mean_combine_kernel,
                    {"ws_ptr": f"*{acc}:16", "starts_ptr": "*i64:16", "ends_ptr": "*i64:16", "out_ptr": f"*{dt}:16",
                     "RS": "i32", "D": "i32:16", "NSPLIT": "i32"},
                    {"BLOCK_RS": 4, "BLOCK_D": 256, "ACC_FP64": fp64}, 4)
        for cfg in bwd_cfgs:
            cfg = dict(cfg); w = cfg.pop("num_warps")
            compile_one(f"span_mean_bwd[{dt}]", sp._span_mean_bwd_kernel, bwd_sig(), {**cfg, "ACC_FP64": fp64}, w)
        for cfg in bd_cfgs:
            cfg = dict(cfg); w = cfg.pop("num_warps")
            compile_one(f"boundary_scores[{dt}]", bd._boundary_scores_kernel,
                        {"x_ptr": f"*{dt}:16", "lengths_ptr": "*i64:16", "out_ptr": f"*{acc}:16", "T": "i32",
                         "D": "i32:16", "stride_xr": "i32:16", "stride_xt": "i32:16"},
                        {**cfg, "EPS": bd.COSINE_EPS, "ACC_FP64": fp64}, w)
    for acc in ("fp32", "fp64"):
        compile_one(f"start_scan[{acc}]", sg._start_scan_kernel,
                    {"flags_ptr": f"*{acc}:16", "lengths_ptr": "*i64:16", "starts_ptr": "*i64:16", "ends_ptr": "*i64:16",
                     "counts_ptr": "*i64:16", "T": "i32", "NUM_OUT": "i32", "threshold": "fp32"},
                    {"BLOCK_T": 1024, "BLOCK_S": 512, "GIVEN": False}, 4)
    compile_one("start_scan[given]", sg._start_scan_kernel,  # segment_pool from a start mask
                {"flags_ptr": "*i1", "lengths_ptr": "*i64:16", "starts_ptr": "*i64:16", "ends_ptr": "*i64:16",
                 "counts_ptr": "*i64:16", "T": "i32", "NUM_OUT": "i32", "threshold": "fp32"},
                {"BLOCK_T": 1024, "BLOCK_S": 512, "GIVEN": True}, 4)
    for segs, from_ids in (("i64", True), ("i32", True), ("i64", False)):  # segment_pool ids / offsets
        compile_one(f"segment_spans[{'ids' if from_ids else 'offsets'},{segs}]", ss._segment_spans_kernel,
                    {"segs_ptr": f"*{segs}:16", "lengths_ptr": "*i64:16", "starts_ptr": "*i64:16", "ends_ptr": "*i64:16",
                     "counts_ptr": "*i64:16", "S": "i32", "T": "i32", "stride_r": "i32", "stride_t": "i32",
                     "STEPS": "i32"},
                    {"BLOCK_S": 256, "FROM_IDS": from_ids}, 4)
    for acc in ("fp32", "fp64"):
        for packed in (False, True):  # boundary_scores(normalize=True)
            compile_one(f"normalize[{acc}{',packed' if packed else ''}]", bd._normalize_kernel,
                        {"scores_ptr": f"*{acc}:16", "lengths_ptr": "*i64:16", "cu_ptr": "*i64:16", "T": "i32"},
                        {"BLOCK_T": 1024, "PACKED": packed}, 4)
    pk = importlib.import_module("lalm_fast.kernels.packed_spans")
    compile_one("compact_starts", pk._compact_starts_kernel,  # segment_pool from a mask, packed
                {"mask_ptr": "*i1", "cu_ptr": "*i64:16", "positions_ptr": "*i64:16", "seg_counts_ptr": "*i64:16",
                 "N": "i32", "stride_m": "i32"}, {"BLOCK_T": 1024}, 4)
    # detection: every mode at T=1500 (BLOCK_T 2048), the limit (4096) in the costliest modes,
    # the spans epilogue (compress) and packed input; the launcher's num_warps for each size
    import triton.language as tl
    for acc, mode, block, spans, packed in [("fp32", 0, 2048, False, False), ("fp64", 0, 2048, False, False),
                                            ("fp32", 1, 2048, False, False),
                                            ("fp32", 2, 2048, False, False), ("fp32", 0, 4096, True, False),
                                            ("fp64", 2, 4096, True, False), ("fp32", 0, 2048, False, True),
                                            ("fp32", 2, 2048, True, True)]:
        out = "*i64" if spans else "*i1"
        sig = {"scores_ptr": f"*{acc}:16", "lengths_ptr": "*i64:16", "cu_seqlens_ptr": "*i64:16",
               "mask_ptr": f"*{acc}:16" if spans else "*i1", "starts_ptr": out, "ends_ptr": out, "counts_ptr": out,
               "scratch_ptr": f"*{acc}:16", "frames": "i32", "row_stride": "i32", "param_bits": "i64",
               "min_len": "i32", "max_len": "i32", "num_out": "i32"}
        fp64 = acc == "fp64"
        compile_one(f"detect[{acc},mode={mode},{'spans' if spans else 'mask'}{',packed' if packed else ''}]",
                    dk._detect_kernel, sig,
                    {"MODE": mode, "PACKED": packed, "SPANS": spans, "BLOCK_T": block, "LEVELS": block.bit_length() - 1,
                     "BLOCK_S": 512, "KEY": tl.uint64 if fp64 else tl.uint32, "KEY_BITS": 64 if fp64 else 32},
                    dk.num_warps_for(block))
    '''
)


def run_aot(mode: str):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(REPO), mode], capture_output=True, text=True, env=env, cwd=REPO, timeout=900
    )
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if records and "skip" in records[0]:
        pytest.skip(records[0]["skip"])
    assert proc.returncode == 0 and records, f"AOT script failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return records


def report(records):
    lines = [f"{'kernel':28s} {'regs':>5s} {'spill':>6s}  config"]
    for r in records:
        cfg = " ".join(f"{k}={v}" for k, v in r["config"].items())
        lines.append(f"{r['kernel']:28s} {str(r.get('n_regs')):>5s} {str(r.get('spill_bytes')):>6s}  {cfg}")
    print("\n".join(lines))


def check(records):
    errors = [r for r in records if "error" in r]
    assert not errors, "\n".join(f"{r['kernel']} {r['config']}: {r['error']}" for r in errors)
    for r in records:
        assert r["ptx_bytes"] > 0 and r["cubin_bytes"] > 0, r
        if r.get("spill_bytes") is not None:
            assert r["spill_bytes"] == 0, f"{r['kernel']} {r['config']} spills {r['spill_bytes']} bytes"


def test_aot_compile_sm90_fixed_configs():
    """Every kernel, fp32/fp16/bf16/fp64, in the fixed configurations used by CI."""
    records = run_aot("fixed")
    report(records)
    check(records)


@pytest.mark.slow
def test_aot_compile_sm90_all_autotune_configs_bf16():
    """Every autotune configuration in bf16 (the H100 target dtype): no spills anywhere."""
    records = run_aot("all")
    report(records)
    check(records)


def test_backend_imports_without_triton():
    """The backend module must import (setting UNAVAILABLE_REASON) when triton is missing."""
    code = textwrap.dedent(
        r'''
        import importlib.util, os, sys
        sys.modules["triton"] = None  # makes `import triton` raise ImportError
        sys.path.insert(0, sys.argv[1])
        try:
            import lalm_fast.kernels as k
        except ModuleNotFoundError:
            spec = importlib.util.spec_from_file_location(
                "lalm_fast.kernels", os.path.join(sys.argv[1], "kernels", "__init__.py"),
                submodule_search_locations=[os.path.join(sys.argv[1], "kernels")])
            k = importlib.util.module_from_spec(spec); sys.modules["lalm_fast.kernels"] = k
            spec.loader.exec_module(k)
        assert k.UNAVAILABLE_REASON and "triton" in k.UNAVAILABLE_REASON, k.UNAVAILABLE_REASON
        try:
            k.span_mean(None, None, None)
        except RuntimeError as exc:
            assert "triton" in str(exc)
        else:
            raise AssertionError("expected RuntimeError")
        print("ok")
        '''
    )
    proc = subprocess.run([sys.executable, "-c", code, str(REPO)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]
