"""Training of :class:`~lalm_fast.models.AudioLM`.

One code path for one CPU, one GPU or many GPUs (``accelerate launch -m lalm_fast.cli train ...``):
AdamW over the trainable parameters (projector + LoRA), warmup + cosine, gradient accumulation,
bf16 autocast on GPU, periodic evaluation, atomic checkpoints and exact resume::

    config = TrainConfig.from_file("configs/tiny.json", output_dir="runs/tiny")
    result = train(config)                 # or train(config, resume=True) after an interruption

The data order is a pure function of (seed, epoch) and a checkpoint stores the position in it
together with the RNG states, so a resumed run takes the same steps as an uninterrupted one.
Checkpoints hold only the trainable weights (a full ``accelerator.save_state`` would copy the
frozen encoder and LM: gigabytes per checkpoint for a 1-8B LM). With a frozen encoder its outputs
are cached on disk (``data.cache``, a :class:`~lalm_fast.data.cache.FeatureCache`): each clip is
encoded once, and later steps, epochs and runs train from the cached states. See docs/training.md.

=================  ==========================================================================
module             holds
=================  ==========================================================================
``config``         :class:`TrainConfig` and its specs, read from JSON / YAML
``models``         :func:`build_model`, :func:`load_trained`, :func:`load_encoder`
``dataset``        :class:`Dataset` / :class:`Batch`, target normalisation, the feature cache, synthetic
                   tones, the epoch's batches
``checkpoint``     :class:`Position`, atomic checkpoints with RNG state, resume
``ctc_warmup``     the CTC projector warm-up (:class:`CTCHead`, :func:`ctc_warmup`)
``loop``           :func:`train`, :class:`TrainResult`
=================  ==========================================================================

Evaluating a model (loss, WER, BLEU) is :mod:`lalm_fast.evaluate.model`.
"""

from lalm_fast.training.checkpoint import (CHECKPOINT, STEP_FILE, Position, latest_checkpoint, load_checkpoint,
                                           save_checkpoint)
from lalm_fast.training.config import (SYNTHETIC, TINY_RANDOM, TRAIN_SPEC_FILE, AlignSpec, DataSpec, ModelSpec,
                                       OptimSpec, RunSpec, TrainConfig, parse_spec, saved_spec)
from lalm_fast.training.ctc_warmup import CTC_WARMUP, CTCHead, ctc_warmup
from lalm_fast.training.dataset import (AUTO_TASK, FEATURE_CACHE, LANGUAGE_NAMES, Batch, Dataset, audio_inputs,
                                        encoder_identity, epoch_batches, feature_cache, is_translation,
                                        make_synthetic, normalize_target, open_dataset, uses_cache)
from lalm_fast.training.loop import TrainResult, train
from lalm_fast.training.models import build_model, load_encoder, load_trained

__all__ = [
    "AUTO_TASK", "AlignSpec", "Batch", "CHECKPOINT", "CTCHead", "CTC_WARMUP", "DataSpec", "Dataset", "FEATURE_CACHE",
    "LANGUAGE_NAMES", "ModelSpec", "OptimSpec", "Position", "RunSpec", "STEP_FILE", "SYNTHETIC", "TINY_RANDOM",
    "TRAIN_SPEC_FILE", "TrainConfig", "TrainResult", "audio_inputs", "build_model", "ctc_warmup", "encoder_identity",
    "epoch_batches", "feature_cache", "is_translation", "latest_checkpoint", "load_checkpoint", "load_encoder",
    "load_trained", "make_synthetic", "normalize_target", "open_dataset", "parse_spec", "save_checkpoint",
    "saved_spec", "train", "uses_cache",
]
