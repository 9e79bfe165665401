"""CTranslate2 Whisper checkpoints -> transformers, without CTranslate2.

The offline Whisper weights that can be installed here (docs/pretrained.md) ship only in
CTranslate2's ``model.bin`` format, which transformers cannot read. This module reads that format
(binary version 6) and maps a Whisper spec onto ``WhisperForConditionalGeneration``'s state dict.

``model.bin`` layout, little-endian: ``u32 version``, string spec name, ``u32 revision``,
``u32 n_vars``; per variable: string name, ``u8 rank``, ``rank x u32`` shape, ``u8 dtype``,
``u32 nbytes``, raw data; then ``u32 n_aliases`` and (alias, target) string pairs. A string is a
``u16`` length that counts a trailing NUL, then the bytes.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from pathlib import Path
from typing import Iterable, Mapping

import torch

SUPPORTED_VERSION = 6
DTYPES = {0: torch.float32, 1: torch.int8, 2: torch.int16, 3: torch.int32, 4: torch.float16,
          5: torch.bfloat16}


class ModelBinError(ValueError):
    """A ``model.bin`` that is truncated, corrupt or of a version this reader does not know."""


# ---------------------------------------------------------------------------------------------
# Reading and writing model.bin


class _Cursor:
    """Reads little-endian fields from a buffer; every overrun names the file and the offset."""

    def __init__(self, data: bytearray, source: str):
        self.data, self.source, self.offset = data, source, 0

    def take(self, size: int, what: str) -> int:
        """Advance by ``size`` bytes and return where they start."""
        start = self.offset
        if size < 0 or start + size > len(self.data):
            raise ModelBinError(f"{self.source}: truncated or corrupt model.bin: {what} needs {size} bytes "
                                f"at offset {start}, but the file has {len(self.data)} bytes")
        self.offset += size
        return start

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack_from("<" + fmt, self.data, self.take(struct.calcsize("<" + fmt), what))

    def string(self, what: str) -> str:
        (length,) = self.unpack("H", what)
        start = self.take(length, what)
        raw = bytes(self.data[start:start + length])
        if length == 0 or raw[-1] != 0:
            raise ModelBinError(f"{self.source}: corrupt model.bin: {what} at offset {start} is not "
                                "NUL-terminated")
        return raw[:-1].decode("utf-8")

    def tensor(self, name: str) -> torch.Tensor:
        (rank,) = self.unpack("B", f"rank of {name!r}")
        shape = self.unpack(f"{rank}I", f"shape of {name!r}")
        code, nbytes = self.unpack("BI", f"dtype of {name!r}")
        if code not in DTYPES:
            raise ModelBinError(f"{self.source}: corrupt model.bin: {name!r} has unknown dtype code {code}")
        dtype = DTYPES[code]
        expected = math.prod(shape) * dtype.itemsize
        if nbytes != expected:
            raise ModelBinError(f"{self.source}: corrupt model.bin: {name!r} of shape {list(shape)} and "
                                f"{dtype} declares {nbytes} bytes, expected {expected}")
        start = self.take(nbytes, f"data of {name!r}")
        if nbytes == 0:
            return torch.empty(shape, dtype=dtype)
        # A view into the file's buffer: no copy of the (large) weights at this point.
        return torch.frombuffer(self.data, dtype=dtype, count=math.prod(shape), offset=start).reshape(shape)


def read_model_bin(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> dict[str, torch.Tensor]:
    """Read a CTranslate2 ``model.bin`` into ``{name: tensor}``, aliases resolved.

    ``paths`` may be a list of files that together make up ``model.bin`` (a checkpoint split in
    parts for a package size limit); they are read in order as one stream.
    """
    parts = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
    source = " + ".join(str(p) for p in parts)
    data = bytearray()
    for part in parts:
        data += part.read_bytes()
    return parse_model_bin(data, source)


def parse_model_bin(data: bytearray, source: str = "<model.bin>") -> dict[str, torch.Tensor]:
    """Parse the bytes of a ``model.bin`` (see the module docstring for the layout)."""
    cursor = _Cursor(data, source)
    (version,) = cursor.unpack("I", "version")
    if version != SUPPORTED_VERSION:
        raise ModelBinError(f"{source}: unsupported CTranslate2 model.bin version {version} "
                            f"(this reader knows version {SUPPORTED_VERSION})")
    cursor.string("spec name")
    cursor.unpack("I", "revision")
    (count,) = cursor.unpack("I", "variable count")
    variables = {}
    for index in range(count):
        name = cursor.string(f"name of variable {index}")
        variables[name] = cursor.tensor(name)
    (alias_count,) = cursor.unpack("I", "alias count")
    for index in range(alias_count):
        alias, target = cursor.string(f"alias {index}"), cursor.string(f"target of alias {index}")
        if target not in variables:
            raise ModelBinError(f"{source}: corrupt model.bin: alias {alias!r} points to missing {target!r}")
        variables[alias] = variables[target]
    if cursor.offset != len(data):
        raise ModelBinError(f"{source}: corrupt model.bin: {len(data) - cursor.offset} trailing bytes")
    return variables


# ---------------------------------------------------------------------------------------------
# Whisper spec -> transformers WhisperForConditionalGeneration

ENGLISH_ONLY_VOCAB = 51864  # tiny.en, base.en, ...: no language or task tokens (multilingual: 51865)


def _linear(ct2: Mapping[str, torch.Tensor], src: str, dst: str, bias: bool = True) -> dict:
    out = {f"{dst}.weight": ct2[f"{src}/weight"]}
    if bias:
        out[f"{dst}.bias"] = ct2[f"{src}/bias"]
    return out


def _norm(ct2: Mapping[str, torch.Tensor], src: str, dst: str) -> dict:
    return {f"{dst}.weight": ct2[f"{src}/gamma"], f"{dst}.bias": ct2[f"{src}/beta"]}


def _split_projections(ct2: Mapping[str, torch.Tensor], src: str, dst: str, names: list[str]) -> dict:
    """Split a fused projection (rows stacked along dim 0) into HF's separate ones. HF's
    ``k_proj`` has no bias (CTranslate2 stores zeros there), so k's bias is dropped."""
    weights = ct2[f"{src}/weight"].chunk(len(names), dim=0)
    biases = ct2[f"{src}/bias"].chunk(len(names), dim=0)
    out = {}
    for name, weight, bias in zip(names, weights, biases):
        out[f"{dst}.{name}.weight"] = weight
        if name != "k_proj":
            out[f"{dst}.{name}.bias"] = bias
    return out


def _attention(ct2, src: str, dst: str, cross: bool) -> dict:
    if cross:  # query from the decoder; key and value from the encoder output, fused
        out = _linear(ct2, f"{src}/linear_0", f"{dst}.q_proj")
        out.update(_split_projections(ct2, f"{src}/linear_1", dst, ["k_proj", "v_proj"]))
        out.update(_linear(ct2, f"{src}/linear_2", f"{dst}.out_proj"))
    else:
        out = _split_projections(ct2, f"{src}/linear_0", dst, ["q_proj", "k_proj", "v_proj"])
        out.update(_linear(ct2, f"{src}/linear_1", f"{dst}.out_proj"))
    return out


def _layer(ct2, side: str, index: int) -> dict:
    src, dst = f"{side}/layer_{index}", f"model.{side}.layers.{index}"
    out = _attention(ct2, f"{src}/self_attention", f"{dst}.self_attn", cross=False)
    out.update(_norm(ct2, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm"))
    if side == "decoder":
        out.update(_attention(ct2, f"{src}/attention", f"{dst}.encoder_attn", cross=True))
        out.update(_norm(ct2, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm"))
    out.update(_linear(ct2, f"{src}/ffn/linear_0", f"{dst}.fc1"))
    out.update(_linear(ct2, f"{src}/ffn/linear_1", f"{dst}.fc2"))
    out.update(_norm(ct2, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm"))
    return out


def _num_layers(ct2: Mapping[str, torch.Tensor], side: str) -> int:
    pattern = re.compile(rf"{side}/layer_(\d+)/")
    indices = {int(match.group(1)) for name in ct2 if (match := pattern.match(name))}
    if indices != set(range(len(indices))):
        raise ModelBinError(f"{side} layers are not numbered 0..n-1: {sorted(indices)}")
    return len(indices)


def whisper_state_dict(ct2: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float32) -> dict:
    """Map a CTranslate2 Whisper spec's variables to ``WhisperForConditionalGeneration`` names."""
    out = {}
    for conv in ("conv1", "conv2"):
        out.update(_linear(ct2, f"encoder/{conv}", f"model.encoder.{conv}"))
    out["model.encoder.embed_positions.weight"] = ct2["encoder/position_encodings/encodings"]
    out.update(_norm(ct2, "encoder/layer_norm", "model.encoder.layer_norm"))
    out["model.decoder.embed_tokens.weight"] = ct2["decoder/embeddings/weight"]
    out["model.decoder.embed_positions.weight"] = ct2["decoder/position_encodings/encodings"]
    out.update(_norm(ct2, "decoder/layer_norm", "model.decoder.layer_norm"))
    for side in ("encoder", "decoder"):
        for index in range(_num_layers(ct2, side)):
            out.update(_layer(ct2, side, index))
    # proj_out is tied to the token embeddings (CTranslate2 stores it as an alias).
    out["proj_out.weight"] = out["model.decoder.embed_tokens.weight"]
    return {name: tensor.to(dtype).clone() for name, tensor in out.items()}


def special_token_ids(tokenizer_json: str | os.PathLike) -> dict[str, int]:
    """``{"<|startoftranscript|>": 50257, ...}``: the added (special) tokens of a tokenizer.json."""
    tokens = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))["added_tokens"]
    return {token["content"]: token["id"] for token in tokens}


def whisper_config(ct2: Mapping[str, torch.Tensor], special_tokens: Mapping[str, int]):
    """A ``WhisperConfig`` whose shapes come from the weights themselves and whose token ids come
    from the tokenizer (English-only and multilingual models number their special tokens apart)."""
    from transformers import WhisperConfig

    d_model, num_mel_bins, _ = ct2["encoder/conv1/weight"].shape
    vocab_size = ct2["decoder/embeddings/weight"].shape[0]
    return WhisperConfig(
        vocab_size=vocab_size, num_mel_bins=num_mel_bins, d_model=d_model,
        encoder_layers=_num_layers(ct2, "encoder"), decoder_layers=_num_layers(ct2, "decoder"),
        encoder_attention_heads=int(ct2["encoder/num_heads"]),
        decoder_attention_heads=int(ct2["decoder/num_heads"]),
        encoder_ffn_dim=ct2["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=ct2["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=ct2["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=ct2["decoder/position_encodings/encodings"].shape[0],
        decoder_start_token_id=special_tokens["<|startoftranscript|>"],
        bos_token_id=special_tokens["<|startoftranscript|>"],
        eos_token_id=special_tokens["<|endoftext|>"], pad_token_id=special_tokens["<|endoftext|>"],
        tie_word_embeddings=True,
    )


_LANGUAGE_TOKEN = re.compile(r"<\|[a-z]{2,3}\|>")  # <|en|>, <|haw|>; not <|nospeech|> etc.


def whisper_generation_config(config, special_tokens: Mapping[str, int], package_config: Mapping | None = None):
    """The generation settings ``WhisperForConditionalGeneration.generate`` reads: transcription
    without timestamps (generate adds ``<|notimestamps|>`` itself); multilingual models also get
    their language/task tables. ``package_config`` is CTranslate2's config.json: the suppressed
    tokens live there, not in the model config, or generate warns about duplicated settings."""
    from transformers import GenerationConfig

    package_config = package_config or {}
    multilingual = config.vocab_size != ENGLISH_ONLY_VOCAB
    settings = dict(
        decoder_start_token_id=config.decoder_start_token_id, bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id,
        max_length=config.max_target_positions,
        suppress_tokens=list(package_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(package_config.get("suppress_ids_begin", [])),
        no_timestamps_token_id=special_tokens["<|notimestamps|>"],
        return_timestamps=False, is_multilingual=multilingual,
        alignment_heads=[list(pair) for pair in package_config.get("alignment_heads", [])],
    )
    if multilingual:
        settings["lang_to_id"] = {t: i for t, i in special_tokens.items() if _LANGUAGE_TOKEN.fullmatch(t)}
        settings["task_to_id"] = {task: special_tokens[f"<|{task}|>"] for task in ("transcribe", "translate")}
    return GenerationConfig(**settings)
