"""Hugging Face <-> megatron-core checkpoints for the LLaMA-layout DeepSeek models.

    python -m megatron_recipes.convert mode=import hf_dir=/models/deepseek-math-7b-base megatron_dir=/ckpt/dsm7b
    python -m megatron_recipes.convert mode=export megatron_dir=outputs/pretrain/x/checkpoints hf_dir=/models/x-hf
    python -m megatron_recipes.pretrain ... model.init_from_hf=/models/deepseek-math-7b-base   # no conversion step

Public API (importing this package and architecture.py loads no torch; hf_to_megatron.py and
megatron_to_hf.py load torch and megatron-core):
- `hf_to_megatron.import_hf_checkpoint(hf_dir, megatron_dir, dtype="auto",
  make_vocab_size_divisible_by=128, tensor_parallel_size=1, overwrite=False) -> Path`: a
  weights-only megatron checkpoint that every recipe loads at any TP/PP/VP/DP
  (`checkpoint.init_from=megatron_dir`), its `model_config` taken from config.json.
- `megatron_to_hf.export_megatron_checkpoint(megatron_dir, hf_dir, dtype="auto",
  max_shard_size="5GB", hf_template=None, overwrite=False) -> Path`: config.json + safetensors
  shards that `transformers.AutoModelForCausalLM.from_pretrained` loads.
- `hf_to_megatron.load_hf_weights(hf_dir, model_chunks) -> HFArchitecture`: fill a live model at
  its own layout straight from the HF files (what `model.init_from_hf` does in `setup_training`).
- `read_hf_architecture(hf_dir) -> HFArchitecture`, `adopt_hf_architecture(model_config)`
  (architecture.py); `training.checkpointing.model_config_from_checkpoint(megatron_dir) -> ModelConfig`.
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
    "hf_architecture",
    "read_hf_architecture",
]
