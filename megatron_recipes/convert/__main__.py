"""convert: Hugging Face <-> megatron-core checkpoints of the LLaMA-layout DeepSeek models.

Locally (one process; CPU is enough, no GPU is used):
    python -m megatron_recipes.convert mode=import hf_dir=/models/deepseek-math-7b-base megatron_dir=/ckpt/dsm7b
    python -m megatron_recipes.convert mode=export megatron_dir=outputs/pretrain/tiny/checkpoints \\
        hf_dir=outputs/hf/tiny max_shard_size=2GB dtype=bf16
Then train from the import at any layout, e.g.
    torchrun --nproc-per-node 8 -m megatron_recipes.pretrain model=deepseek_math_7b parallelism=tp8_sp \\
        checkpoint.init_from=/ckpt/dsm7b
or skip the import: `model.init_from_hf=/models/deepseek-math-7b-base` reads the HF files
straight into the run's layout (megatron_recipes.convert.hf_to_megatron.load_hf_weights).
On a cluster: the same command in a one-task job step on any node (CPU only, e.g.
`srun -n 1 -c 8 --mem 64G python -m megatron_recipes.convert ...`), next to the shared filesystem.

Checks come first: the HF config (architecture, biases, rope scaling, head size), every shard
file and tensor (presence, shape, dtype, file length) or the megatron checkpoint's metadata
against its model_config; a bad input prints one line `error: ...` naming the file or tensor
and exits with status 2 before anything is written.

Memory: import holds one copy of the model in the target dtype (about 14 GB for a 7B model in
bf16); export holds one output shard plus one decoder layer. Time: one read and one write of
the model (disk-bound). See megatron_recipes/convert/__init__.py for the API.
"""

from __future__ import annotations

import os

from megatron_recipes.config import register_configs
from megatron_recipes.convert.config import ConvertConfig
from stack_common.cli import hydra_entry_point
from stack_common.logs import TRAINING_CONSOLE


def run_conversion(config: ConvertConfig):
    """Import or export per `config.mode`; returns the written directory."""
    from megatron_recipes.convert import (  # noqa: PLC0415  torch/megatron load after the config checks
        hf_to_megatron,
        megatron_to_hf,
    )

    if config.mode == "import":
        return hf_to_megatron.import_hf_checkpoint(
            config.hf_dir,
            config.megatron_dir,
            dtype=config.dtype,
            make_vocab_size_divisible_by=config.make_vocab_size_divisible_by,
            tensor_parallel_size=config.tensor_parallel_size,
            overwrite=config.overwrite,
        )
    return megatron_to_hf.export_megatron_checkpoint(
        config.megatron_dir,
        config.hf_dir,
        dtype=config.dtype,
        max_shard_size=config.max_shard_size,
        hf_template=config.hf_template,
        overwrite=config.overwrite,
    )


@hydra_entry_point("convert", register_configs, console=TRAINING_CONSOLE)
def main(config: ConvertConfig) -> None:
    written = run_conversion(config)
    # The final, machine-readable line: where the converted checkpoint is.
    print(f"convert: {config.mode} done -> {os.fspath(written)}", flush=True)


if __name__ == "__main__":
    main()
