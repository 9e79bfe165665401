"""Generic audio LMs: HF encoder + compressor + projector + HF causal LM."""

from lalm_fast.models.audio_lm import AudioLM, AudioLMConfig, AudioLMInputs, AudioLMOutput
from lalm_fast.models.projector import MLPProjector

__all__ = ["AudioLM", "AudioLMConfig", "AudioLMInputs", "AudioLMOutput", "MLPProjector"]
