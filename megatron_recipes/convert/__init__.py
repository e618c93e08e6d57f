"""Hugging Face <-> megatron-core checkpoints for the LLaMA-layout DeepSeek models.

    python -m megatron_recipes.convert mode=import hf_dir=/models/deepseek-math-7b-base megatron_dir=/ckpt/dsm7b
    python -m megatron_recipes.convert mode=export megatron_dir=outputs/pretrain/x/checkpoints hf_dir=/models/x-hf
    python -m megatron_recipes.pretrain ... model.init_from_hf=/models/deepseek-math-7b-base   # no conversion step

Public API (this package imports no torch; the functions load it when called):
- `import_hf_checkpoint(hf_dir, megatron_dir, dtype="auto", make_vocab_size_divisible_by=128,
  tensor_parallel_size=1, overwrite=False) -> Path`: a weights-only megatron checkpoint that
  every recipe loads at any TP/PP/VP/DP (`checkpoint.init_from=megatron_dir`), its
  `model_config` taken from config.json (hf_to_megatron.py).
- `export_megatron_checkpoint(megatron_dir, hf_dir, dtype="auto", max_shard_size="5GB",
  hf_template=None, overwrite=False) -> Path`: config.json + safetensors shards that
  `transformers.AutoModelForCausalLM.from_pretrained` loads (megatron_to_hf.py).
- `load_hf_weights(hf_dir, model_chunks) -> HFArchitecture`: fill a live model at its own
  layout straight from the HF files (what `model.init_from_hf` does in `setup_training`).
- `read_hf_architecture(hf_dir) -> HFArchitecture`, `adopt_hf_architecture(model_config)`,
  `model_config_from_checkpoint(megatron_dir) -> ModelConfig` (architecture.py).
- `ConversionError` (a ConfigError): bad inputs, with the file / tensor / field named.

Modules: architecture.py (config.json <-> ModelConfig), mapping.py (which HF rows make each
megatron tensor), hf_checkpoint.py (safetensors headers, reads by rows, sharded writing),
hf_to_megatron.py, megatron_to_hf.py, __main__.py (the entry point).

Cost: a conversion reads and writes the model once; import holds one copy of the model in
memory, export one output shard plus one layer, init-from-HF only this rank's own shard.
"""

from __future__ import annotations

from megatron_recipes.convert.architecture import (
    ConversionError,
    HFArchitecture,
    adopt_hf_architecture,
    hf_architecture,
    read_hf_architecture,
)

__all__ = [
    "ConversionError",
    "HFArchitecture",
    "adopt_hf_architecture",
    "export_megatron_checkpoint",
    "hf_architecture",
    "import_hf_checkpoint",
    "load_hf_weights",
    "model_config_from_checkpoint",
    "read_hf_architecture",
]


def import_hf_checkpoint(*args, **kwargs):
    from megatron_recipes.convert.hf_to_megatron import import_hf_checkpoint as run

    return run(*args, **kwargs)


def export_megatron_checkpoint(*args, **kwargs):
    from megatron_recipes.convert.megatron_to_hf import export_megatron_checkpoint as run

    return run(*args, **kwargs)


def load_hf_weights(*args, **kwargs):
    from megatron_recipes.convert.hf_to_megatron import load_hf_weights as run

    return run(*args, **kwargs)


def model_config_from_checkpoint(megatron_dir):
    """The ModelConfig a megatron checkpoint's `model_config` record describes (its vocab_size
    included), for building the model it holds."""
    from dataclasses import fields

    # Deferred: models.config imports this package's architecture module, so this package loads first.
    from megatron_recipes.models.config import ModelConfig
    from megatron_recipes.training.checkpointing import read_checkpoint_info

    record = read_checkpoint_info(megatron_dir).get("model_config") or {}
    if not record:
        raise ConversionError(f"{megatron_dir} has no model_config record")
    names = {field.name for field in fields(ModelConfig)}
    return ModelConfig(**{key: value for key, value in record.items() if key in names})
