"""Differential fuzz suite: every public op on every backend that runs on CPU, against the
contract and against each other.

Inputs are padded, masked, packed (with trailing rows past ``cu_seqlens[-1]``) or all-valid;
every dtype; empty batches, empty samples and ``T = 0``; NaN, +-Inf and huge values in valid
frames and in padding; ties (integer-valued frames); extreme and non-integer arguments. Checks:

- every backend: a result obeys the contract (shapes, counts that match the rows, spans inside
  each sample, padding rows zero, each token the float64 mean of its span's frames, so a NaN
  reaches only the token holding it), padding is never read (garbage there changes nothing),
  and bad arguments raise ValueError / TypeError on every backend alike;
- backends agree: token counts and spans exactly, values to rounding, gradients likewise;
  detection decisions exactly, on shared scores (the C++ detector against ``_detect.py``).

The torch backend is part of the comparison, not trusted blindly: each token is also checked
against a plain loop. CI runs a bounded number of examples (``-m fuzz``, well under a minute);
``LALM_FUZZ_EXAMPLES=2000`` runs longer, with fresh random examples each time.
"""

import math
import os
import signal
from functools import wraps

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lalm_fast.ops as ops
from lalm_fast.ops import _detect, backends
from lalm_fast.ops._inputs import padded_grid
from lalm_fast.ops.modes import Mode
from tests import oracle

pytestmark = pytest.mark.fuzz

EXAMPLES = int(os.environ.get("LALM_FUZZ_EXAMPLES", "0"))
SETTINGS = settings(max_examples=EXAMPLES or 100, deadline=None, derandomize=not EXAMPLES,
                    suppress_health_check=list(HealthCheck))
EXAMPLE_SECONDS = 30  # a hang (a loop to a huge min_len, say) fails the example instead of the run


def per_example_alarm(test):
    @wraps(test)
    def guarded(*args, **kwargs):
        def expire(*_):
            raise TimeoutError(f"one example took more than {EXAMPLE_SECONDS} s")

        previous = signal.signal(signal.SIGALRM, expire)
        signal.alarm(EXAMPLE_SECONDS)
        try:
            return test(*args, **kwargs)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
    return guarded
# Triton runs its kernels in the interpreter on CPU tensors; cheap at these sizes.
BACKENDS = [name for name in ("torch", "cpu", "triton") if backends.is_available(name, "cpu")]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
HUGE = {torch.float16: 6e4, torch.bfloat16: 1e30, torch.float32: 1e30, torch.float64: 1e300}
TOLERANCE = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float32: 2e-5, torch.float64: 1e-12}


class Batch:
    """One fuzz input in one layout, with the per-sample view the checks need."""

    def __init__(self, x, lengths, layout, extra_rows=0):
        self.x, self.lengths, self.layout = x, lengths, layout  # x [B, T, D] (packed: flattened below)
        self.cu = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
        if layout == "packed":
            rows = [x[b, : int(lengths[b])] for b in range(x.shape[0])]
            tail = torch.full((extra_rows, x.shape[2]), float("nan"), dtype=x.dtype)
            self.flat = torch.cat(rows + [tail]) if rows else tail

    def __repr__(self):
        return f"Batch({self.layout}, lengths={self.lengths.tolist()}, x={self.x!r})"

    def args(self, x=None):
        """(x, kwargs) for a public op; ``x`` replaces the features (same layout)."""
        x = self.input_x() if x is None else x
        if self.layout == "packed":
            return x, {"cu_seqlens": self.cu, "max_seqlen": int(self.lengths.max()) if self.lengths.numel() else 0}
        if self.layout == "masked":
            frames = torch.arange(x.shape[1])
            return x, {"attention_mask": (frames[None, :] < self.lengths[:, None]).long()}
        if self.layout == "full":
            return x, {}
        return x, {"lengths": self.lengths}

    def input_x(self):
        return self.flat if self.layout == "packed" else self.x

    def with_garbage_padding(self):
        """The same input with every frame outside the samples set to NaN."""
        x = self.input_x().clone()
        if self.layout == "packed":
            x[int(self.cu[-1]):] = float("nan")
        else:
            frames = torch.arange(x.shape[1])
            x[frames[None, :] >= self.lengths[:, None]] = float("nan")
        return x

    def sample(self, b):
        """Frames of sample b as [L, D]."""
        if self.layout == "packed":
            return self.flat[int(self.cu[b]): int(self.cu[b + 1])]
        return self.x[b, : int(self.lengths[b])]


@st.composite
def batches(draw, layouts=("padded", "masked", "packed", "full"), dtypes=DTYPES, dims=(1, 3, 0)):
    layout = draw(st.sampled_from(layouts))
    batch, frames, dim = draw(st.integers(0, 3)), draw(st.integers(0, 10)), draw(st.sampled_from(dims))
    dtype = draw(st.sampled_from(dtypes))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    x = torch.randn(batch, frames, dim, generator=gen, dtype=torch.float64)
    if draw(st.booleans()):  # integer-valued frames: exact ties, plateaus, repeated frames
        x = torch.randint(-1, 2, x.shape, generator=gen).double()
    # Huge values share one sign: +1e30 and -1e30 in one span cancel to a result that depends
    # on the summation order (ill-conditioned), which no backend can be asked to agree on.
    huge = draw(st.sampled_from([1, -1])) * HUGE[dtype]
    for _ in range(draw(st.integers(0, 3)) if x.numel() else 0):
        index = tuple(draw(st.integers(0, size - 1)) for size in x.shape)
        x[index] = draw(st.sampled_from([math.nan, math.inf, -math.inf, huge]))
    if layout == "full":
        lengths = torch.full((batch,), frames, dtype=torch.long)
    else:
        lengths = torch.tensor(draw(st.lists(st.integers(0, frames), min_size=batch, max_size=batch)),
                               dtype=torch.long)
    return Batch(x.to(dtype), lengths, layout, draw(st.integers(0, 2)))


# --------------------------------------------------------------------------- checks


def token_bounds(out, b):
    """(first, end) frame of each valid token of sample b."""
    if out.is_packed:
        rows = out.spans[int(out.cu_seqlens[b]): int(out.cu_seqlens[b + 1])]
    else:
        rows = out.spans[b, : int(out.lengths[b])]
    return [tuple(r) for r in rows.tolist()]


def token_values(out, b):
    if out.is_packed:
        return out.values[int(out.cu_seqlens[b]): int(out.cu_seqlens[b + 1])]
    return out.values[b, : int(out.lengths[b])]


def check_contract(batch: Batch, out, rows_expected=None, covers=True):
    """What every pooling result must satisfy, whatever the backend."""
    samples, dim = batch.lengths.shape[0], batch.x.shape[2]
    assert out.lengths.shape == (samples,) and out.values.dtype == batch.x.dtype
    if out.is_packed:
        rows = out.values.shape[0]
        assert out.values.shape == (rows, dim) and out.spans.shape == (rows, 2)
        assert torch.equal(out.cu_seqlens, torch.cat([out.lengths.new_zeros(1), out.lengths.cumsum(0)]))
        assert int(out.cu_seqlens[-1]) <= rows
        assert (out.values[int(out.cu_seqlens[-1]):] == 0).all()
    else:
        rows = out.values.shape[1]
        assert out.values.shape == (samples, rows, dim) and out.spans.shape == (samples, rows, 2)
        frames = torch.arange(rows)
        assert ((out.lengths >= 0) & (out.lengths <= rows)).all()
        assert (out.values[frames[None, :] >= out.lengths[:, None]] == 0).all()
    if rows_expected is not None:
        assert rows == rows_expected
    for b in range(samples):
        length = int(batch.lengths[b])
        assert (length == 0) == (int(out.lengths[b]) == 0)  # a non-empty sample always gets a token
        bounds = token_bounds(out, b)
        assert all(0 <= s <= e <= length for s, e in bounds)
        assert all(e1 <= s2 for (_, e1), (s2, _) in zip(bounds, bounds[1:]))
        if covers and length:  # every frame in some token: surplus segments merge, never drop
            assert bounds[0][0] == 0 and bounds[-1][1] == length, bounds
            assert all(e1 == s2 for (_, e1), (s2, _) in zip(bounds, bounds[1:])), bounds
        want = oracle.segment_means(batch.sample(b), bounds)
        got = token_values(out, b).double()
        torch.testing.assert_close(got, want.to(batch.x.dtype).double(), equal_nan=True,
                                   rtol=TOLERANCE[batch.x.dtype], atol=TOLERANCE[batch.x.dtype])


def check_agree(results, dtype):
    """Results of several backends: counts and spans exact, values to rounding, or the same error."""
    kinds = {name: type(r).__name__ if isinstance(r, Exception) else "ok" for name, r in results.items()}
    assert len(set(kinds.values())) == 1, f"backends disagree: {kinds} {results}"
    first, *rest = results.values()
    if isinstance(first, Exception):
        return
    for other in rest:
        if isinstance(first, torch.Tensor):
            if first.dtype == torch.bool:
                assert torch.equal(first, other)
            else:
                torch.testing.assert_close(first, other, equal_nan=True, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])
            continue
        assert torch.equal(first.lengths, other.lengths) and torch.equal(first.spans, other.spans)
        assert (first.cu_seqlens is None) == (other.cu_seqlens is None)
        torch.testing.assert_close(first.values, other.values, equal_nan=True, rtol=TOLERANCE[dtype],
                                   atol=TOLERANCE[dtype])


def scoring_backends(batch):
    """Backends whose boundary scores to compare on this batch: all of them (frames past ~1e19,
    whose sums overflow fp32, are rescored from max-scaled frames by every kernel)."""
    return list(BACKENDS)


def run_all(call, names=None):
    """``call(backend)`` on every backend; a ValueError / TypeError is a result, anything else fails."""
    results = {}
    for name in names or BACKENDS:
        try:
            results[name] = call(name)
        except (ValueError, TypeError) as exc:
            results[name] = exc
    return results


def pooling_calls(batch):
    """(name, call(backend, x, kwargs)) for every pooling op on this batch."""
    gen = torch.Generator().manual_seed(7)
    shape = batch.input_x().shape[:-1]
    mask = torch.rand(shape, generator=gen) < 0.4
    ids = (torch.rand(batch.x.shape[:2], generator=gen) < 0.4).long().cumsum(1)
    ids_near_limit = ids.clone()
    ids_near_limit[:, -1:] = 2**63 - 1  # the last frame: still sorted
    calls = [
        ("uniform_pool", lambda be, x, kw: ops.uniform_pool(x, k=3, backend=be, **kw)),
        ("downsample", lambda be, x, kw: ops.downsample(x, k=2, backend=be, **kw)),
        ("segment_pool", lambda be, x, kw: ops.segment_pool(x, boundaries=mask, backend=be, **kw)),
        ("segment_pool_max", lambda be, x, kw: ops.segment_pool(x, boundaries=mask, max_segments=max(3, len(batch.lengths)),
                                                                 backend=be, **kw)),
        # Every frame a start and the fewest rows allowed: almost every sample has a surplus to merge.
        ("segment_pool_fewest_rows", lambda be, x, kw: ops.segment_pool(
            x, boundaries=torch.ones_like(mask), max_segments=max(1, len(batch.lengths)), backend=be, **kw)),
    ]
    if batch.layout != "packed":
        calls += [
            ("segment_ids", lambda be, x, kw: ops.segment_pool(x, segment_ids=ids, max_segments=3, backend=be, **kw)),
            ("segment_ids_big", lambda be, x, kw: ops.segment_pool(x, segment_ids=ids_near_limit, backend=be, **kw)),
        ]
    if batch.x.shape[2] <= 1:  # detection is exact only where scores are (D = 1): see test_detection_*
        calls += [
            ("compress_rate", lambda be, x, kw: ops.segment_compress(x, rate=2.5, backend=be, **kw)),
            ("compress_peak", lambda be, x, kw: ops.segment_compress(x, min_len=2, backend=be, **kw)),
            ("compress_threshold", lambda be, x, kw: ops.segment_compress(x, threshold=0.5, max_len=3, backend=be,
                                                                          **kw)),
        ]
    return calls


# --------------------------------------------------------------------------- the tests


@SETTINGS
@given(batch=batches())
@per_example_alarm
def test_pooling_ops_keep_the_contract_and_agree_across_backends(batch):
    for name, call in pooling_calls(batch):
        results = run_all(lambda be: call(be, *batch.args()), scoring_backends(batch))
        for result in results.values():
            assert not isinstance(result, Exception), result
            check_contract(batch, result, covers=name != "downsample")
        check_agree(results, batch.x.dtype)
        # Padding is never read: NaN there changes nothing, bit for bit.
        for backend in results:
            again = call(backend, *batch.args(batch.with_garbage_padding()))
            assert torch.equal(again.lengths, results[backend].lengths)
            assert torch.equal(again.values.nan_to_num(7.0), results[backend].values.nan_to_num(7.0))


@SETTINGS
@given(batch=batches(dtypes=[torch.float32, torch.float64]))
@per_example_alarm
def test_gradients_agree_and_never_reach_padding(batch):
    for name, call in pooling_calls(batch):
        grads = {}
        for backend in scoring_backends(batch):
            x = batch.input_x().clone().requires_grad_(True)
            x_in, kw = batch.args(x)
            out = call(backend, x_in, kw)
            weights = torch.linspace(-1, 1, out.values.numel(), dtype=x.dtype).view_as(out.values)
            (out.values * weights).sum().backward()
            assert x.grad.shape == x.shape and x.grad.isfinite().all()  # linear in x: NaN in x cannot reach it
            garbage = batch.with_garbage_padding().isnan() & ~batch.input_x().isnan()
            assert (x.grad[garbage] == 0).all()
            grads[backend] = x.grad
        check_agree(grads, batch.x.dtype)


@SETTINGS
@given(batch=batches(dtypes=[torch.float32, torch.float64]), normalize=st.booleans())
@per_example_alarm
def test_boundary_scores_agree_and_stay_inside_samples(batch, normalize):
    x, kw = batch.args()
    results = run_all(lambda be: ops.boundary_scores(x, normalize=normalize, backend=be, **kw),
                      scoring_backends(batch))
    check_agree(results, batch.x.dtype)
    for name, scores in results.items():
        again = ops.boundary_scores(batch.with_garbage_padding(), normalize=normalize, backend=name, **kw)
        assert torch.equal(scores.nan_to_num(7.0), again.nan_to_num(7.0))
        if normalize:
            assert scores.isfinite().all() and (scores >= 0).all() and (scores <= 1).all()


@st.composite
def detection_settings(draw):
    mode = draw(st.sampled_from(["peak", "threshold", "rate"]))
    settings_ = {"min_len": draw(st.sampled_from([1, 1, 2, 3, 50, 2**62]))}
    if mode == "peak":
        settings_["prominence"] = draw(st.sampled_from([0.0, 0.05, 0.3, 1.0]))
    elif mode == "threshold":
        settings_["threshold"] = draw(st.sampled_from([-1.0, 0.0, 0.2, 1.0, math.inf, -math.inf]))
    else:
        settings_["rate"] = draw(st.sampled_from([1, 1.5, 2, 3, 7.5, 1e300]))
    if mode != "rate" and draw(st.booleans()):
        settings_["max_len"] = settings_["min_len"] + draw(st.sampled_from([0, 1, 3, 2**62]))
    return settings_


@SETTINGS
@given(batch=batches(dims=(1,), dtypes=[torch.float32, torch.float64]), detect=detection_settings())
@per_example_alarm
def test_detection_agrees_across_backends_on_exact_scores(batch, detect):
    # D = 1 scores are exactly 0, 1 or 2 (or NaN) on every backend, so decisions must match.
    x, kw = batch.args()
    names = scoring_backends(batch)
    masks = run_all(lambda be: ops.detect_boundaries(x, backend=be, **kw, **detect), names)
    check_agree(masks, batch.x.dtype)
    tokens = run_all(lambda be: ops.segment_compress(x, backend=be, **kw, **detect), names)
    check_agree(tokens, batch.x.dtype)
    for out in tokens.values():
        check_contract(batch, out)
    if "rate" in detect:
        want = torch.ceil(batch.lengths.double() / detect["rate"]).long()
        assert torch.equal(tokens["torch"].lengths, want)


@st.composite
def score_rows(draw):
    rows, frames = draw(st.integers(0, 3)), draw(st.integers(0, 12))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    values = st.one_of(st.sampled_from([0.0, 0.5, 1.0, 2.0, math.nan, math.inf]), st.floats(0, 2, width=32))
    scores = torch.tensor(draw(st.lists(values, min_size=rows * frames, max_size=rows * frames)), dtype=dtype)
    lengths = torch.tensor(draw(st.lists(st.integers(0, frames), min_size=rows, max_size=rows)), dtype=torch.long)
    return scores.view(rows, frames), lengths


@SETTINGS
@given(data=score_rows(), detect=detection_settings())
@pytest.mark.skipif("cpu" not in BACKENDS, reason="needs the C++ extension")
@per_example_alarm
def test_cpu_detector_matches_the_vectorised_detector_on_any_scores(data, detect):
    from lalm_fast import _C
    from lalm_fast.ops.arguments import detection_mode

    scores, lengths = data
    mode, param = detection_mode(detect.get("prominence"), detect.get("rate"), detect.get("threshold"))
    frames = scores.shape[1]
    min_len = min(detect["min_len"], max(frames, 1))
    max_len = min(detect.get("max_len", 0), max(frames, 1))
    grid = padded_grid(torch.zeros(*scores.shape, 1), lengths)
    valid = torch.arange(frames)[None, :] < lengths[:, None]
    scores = torch.where(valid & (torch.arange(frames) > 0), scores, 0.0)  # what boundary_scores gives
    want = _detect.starts_from_scores(grid, scores, mode, param, min_len, max_len)
    got = _C.cpu.detect_boundaries(scores, lengths, int(mode), param, min_len, max_len)
    assert torch.equal(got, want)


ARGUMENTS = st.one_of(st.integers(-3, 12), st.sampled_from([2**31, 2**62, 2**63 - 1, 2**64, math.inf, math.nan]),
                      st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(), st.just("2"))


TAKES = {"uniform_pool": ["k"], "downsample": ["k"], "segment_pool": ["max_segments"],
         "segment_compress": ["rate", "prominence", "threshold", "min_len", "max_len", "max_segments"],
         "detect_boundaries": ["rate", "prominence", "threshold", "min_len", "max_len"]}


@SETTINGS
@given(batch=batches(dtypes=[torch.float32]), op_name=st.sampled_from([(op, n) for op, ns in TAKES.items() for n in ns]),
       value=ARGUMENTS)
@per_example_alarm
def test_any_argument_value_gives_a_contract_result_or_a_clear_error(batch, op_name, value):
    op, name = op_name
    x, kw = batch.args()
    if op == "segment_pool":
        kw["boundaries"] = torch.ones(x.shape[:-1], dtype=torch.bool)
    if name == "max_segments" and isinstance(value, int) and 2**20 < value < 2**31:
        value = 2**31  # rejected (past the limit) rather than allocated
    results = run_all(lambda be: getattr(ops, op)(x, backend=be, **kw, **{name: value}), scoring_backends(batch))
    if name == "rate" and isinstance(value, float) and not math.isfinite(value):  # the contract: no infinite rate
        assert all(isinstance(r, ValueError) for r in results.values()), results
    for result in results.values():
        if isinstance(result, Exception):
            assert name in str(result), f"{type(result).__name__} does not name {name}: {result}"
        elif op != "detect_boundaries":
            check_contract(batch, result, covers=op != "downsample")
    if op in ("uniform_pool", "downsample", "segment_pool") or batch.x.shape[2] <= 1:
        check_agree(results, torch.float32)  # detection on D > 1 may differ by score rounding
