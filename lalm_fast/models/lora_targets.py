"""Module names that LoRA targets in a Llama/Qwen-style causal LM (shared by
:meth:`~lalm_fast.models.AudioLM.add_lora` and :mod:`lalm_fast.integrations.lora`)."""

__all__ = ["LLM_ATTENTION", "LLM_ALL_LINEAR"]

LLM_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
LLM_ALL_LINEAR = LLM_ATTENTION + ("gate_proj", "up_proj", "down_proj")
