"""The convert entry point's schema (python -m megatron_recipes.convert, conf/convert.yaml). The
recipes' own way to start from Hugging Face weights is `model.init_from_hf` (models/config.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from megatron_recipes.convert.architecture import ConversionError
from megatron_recipes.runtime.config import PRECISIONS
from stack_common.checks import require_choice, require_positive
from stack_common.errors import ConfigError

CONVERT_MODES = ("import", "export")

_SIZE_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


def parse_size(text: str | int) -> int:
    """'5GB' -> 5e9 bytes, '500MiB' -> 500 x 2^20, 1024 -> 1024 (transformers' spelling)."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B?)\s*", str(text).upper())
    if not match or match.group(2) not in _SIZE_UNITS:
        raise ConversionError(f"cannot read the size {text!r} (examples: 5GB, 500MB, 2GiB)")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


@dataclass
class ConvertConfig:
    """python -m megatron_recipes.convert (conf/convert.yaml): HF <-> megatron checkpoints.

    mode=import reads `hf_dir` (config.json + safetensors, one file or sharded with an index)
    and writes a weights-only megatron checkpoint `<megatron_dir>/iter_0000000/` + `latest`,
    loadable by every recipe at any layout (`checkpoint.init_from=<megatron_dir>`). mode=export
    reads `megatron_dir` (a run directory or one iter_* directory, saved at any layout) and
    writes `hf_dir` for `AutoModelForCausalLM.from_pretrained`.
    """

    mode: str = "import"
    hf_dir: str | None = None
    megatron_dir: str | None = None
    # auto: keep the source's dtype (the HF tensors' on import, the stored weights' on export).
    dtype: str = "auto"
    # Import: vocabulary rows are zero-padded to a multiple of make_vocab_size_divisible_by x
    # tensor_parallel_size (megatron loads them at another padding too; export removes it).
    make_vocab_size_divisible_by: int = 128
    tensor_parallel_size: int = 1
    # Export: the largest safetensors file, in transformers' spelling (5GB, 500MB, 2GiB).
    max_shard_size: str = "5GB"
    # Export: an HF model directory whose config.json fields (token ids...) and tokenizer files
    # are carried over; null = the config an import stored, or the run's model.init_from_hf.
    hf_template: str | None = None
    # Replace an existing output (import: a directory with a `latest`; export: a non-empty hf_dir).
    overwrite: bool = False

    def validate(self) -> None:
        require_choice("mode", self.mode, CONVERT_MODES)
        if not self.hf_dir or not self.megatron_dir:
            raise ConfigError(
                "set both hf_dir=... and megatron_dir=... (import reads hf_dir, export reads megatron_dir)"
            )
        require_choice("dtype", self.dtype, PRECISIONS)
        require_positive("make_vocab_size_divisible_by", self.make_vocab_size_divisible_by)
        require_positive("tensor_parallel_size", self.tensor_parallel_size)
        if parse_size(self.max_shard_size) <= 0:
            raise ConfigError(f"max_shard_size={self.max_shard_size!r} must be positive")
        source = Path(self.hf_dir if self.mode == "import" else self.megatron_dir)
        if not source.exists():
            raise ConfigError(f"{'hf_dir' if self.mode == 'import' else 'megatron_dir'}={source} does not exist")
