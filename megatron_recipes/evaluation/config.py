"""The evaluation recipe's `dataset` section (datasets.py). The recipe's schema, EvaluateConfig,
is in megatron_recipes/config.py; its prompt styles are prompts.py's registry."""

from __future__ import annotations

from dataclasses import dataclass, field

from megatron_recipes.evaluation.datasets import DATASETS, reads_local_files
from stack_common.checks import require_at_least, require_choice
from stack_common.errors import ConfigError


@dataclass
class EvalDatasetConfig:
    """Which problems: champ (offline, from the champ-dataset package), or local gsm8k / math files."""

    name: str = "champ"
    path: str | None = None
    limit: int | None = None
    subjects: list[str] = field(default_factory=list)
    levels: list[str] = field(default_factory=list)

    def validate(self) -> None:
        require_choice("dataset.name", self.name, DATASETS)
        if reads_local_files(self.name) and not self.path:
            raise ConfigError(f"dataset={self.name} reads local files: set dataset.path=/path/to/{self.name}")
        if self.limit is not None:  # null = all
            require_at_least("dataset.limit", self.limit, 1)
