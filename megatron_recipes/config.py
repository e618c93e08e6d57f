"""Dataclass schemas of the training, post-training and evaluation recipes, registered in Hydra's
ConfigStore. All defaults live here (DESIGN.md convention 6); YAML files under `conf/` pick
presets (`model: deepseek_math_7b`, `parallelism: tp2`, ...) and experiments.

Every schema has `validate()`; the CLI (`beam_pipelines.cli.hydra_entry_point`) runs it after
composition and before any process group or model exists, so a bad value fails with one line.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from beam_pipelines.config import ConfigError  # one error type for every config problem

__all__ = ["ConfigError", "register_configs", "EvaluateConfig", "AnswerCheckConfig", "SandboxConfig"]


def register_configs() -> None:
    """Register every schema (idempotent). Group YAML files name them in their defaults lists."""
    ConfigStore.instance()
    register_evaluation_configs()


# ------------------------------------------------------------------------------------------------
# Rewards, sandbox and evaluation (python -m megatron_recipes.evaluate). The numeric defaults come
# from the library dataclasses they configure (CheckOptions, SandboxLimits), so they live once.
# ------------------------------------------------------------------------------------------------

from dataclasses import dataclass, field  # noqa: E402

from megatron_recipes.rewards.equivalence import CheckOptions  # noqa: E402  (light: no sympy)
from megatron_recipes.sandbox.executor import SandboxLimits  # noqa: E402  (light: stdlib only)

EVAL_DATASETS = ("champ", "gsm8k", "math")
EVAL_PROMPT_STYLES = ("gsm8k_cot_8shot", "math_cot_4shot", "zero_shot", "program_of_thought")


@dataclass
class AnswerCheckConfig:
    """Answer equivalence (megatron_recipes.rewards): leniency and the symbolic worker pool."""

    relative_tolerance: float = CheckOptions.relative_tolerance
    approximate_decimals: bool = CheckOptions.approximate_decimals
    min_significant_digits: int = CheckOptions.min_significant_digits
    # Hard wall-clock limit of one symbolic check; a worker past it is killed and replaced.
    timeout_s: float = 3.0
    num_workers: int = 2

    def validate(self) -> None:
        if not 0 <= self.relative_tolerance < 1:
            raise ConfigError("answer_check.relative_tolerance must be in [0, 1)")
        if self.min_significant_digits < 1:
            raise ConfigError("answer_check.min_significant_digits must be >= 1")
        if self.timeout_s <= 0 or self.num_workers < 1:
            raise ConfigError("answer_check.timeout_s must be > 0 and answer_check.num_workers >= 1")

    def options(self) -> CheckOptions:
        return CheckOptions(self.relative_tolerance, self.approximate_decimals, self.min_significant_digits)


@dataclass
class SandboxConfig:
    """Limits of one sandboxed program (megatron_recipes.sandbox) and concurrent programs."""

    wall_seconds: float = SandboxLimits.wall_seconds
    cpu_seconds: int = SandboxLimits.cpu_seconds
    memory_mb: int = SandboxLimits.memory_mb
    processes: int = SandboxLimits.processes
    file_size_mb: int = SandboxLimits.file_size_mb
    output_bytes: int = SandboxLimits.output_bytes
    max_workers: int = 2

    def validate(self) -> None:
        try:
            self.limits().validate()
        except ValueError as error:
            raise ConfigError(str(error)) from None
        if self.max_workers < 1:
            raise ConfigError("sandbox.max_workers must be >= 1")

    def limits(self) -> SandboxLimits:
        return SandboxLimits(self.wall_seconds, self.cpu_seconds, self.memory_mb, self.processes, self.file_size_mb, self.output_bytes)


@dataclass
class EvalDatasetConfig:
    """Which problems: champ (offline, from the champ-dataset package), or local gsm8k / math files."""

    name: str = "champ"
    path: str | None = None
    limit: int | None = None
    subjects: list[str] = field(default_factory=list)
    levels: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if self.name not in EVAL_DATASETS:
            raise ConfigError(f"dataset.name={self.name!r} is not one of {', '.join(EVAL_DATASETS)}")
        if self.name != "champ" and not self.path:
            raise ConfigError(f"dataset={self.name} reads local files: set dataset.path=/path/to/{self.name}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError("dataset.limit must be >= 1 (or null for all)")


@dataclass
class SamplingConfig:
    """Mirrors generation.interface.SamplingParams."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 1024
    n: int = 1
    seed: int = 0
    stop: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ConfigError("sampling.temperature must be >= 0 and sampling.top_p in (0, 1]")
        if self.n < 1 or self.max_new_tokens < 1:
            raise ConfigError("sampling.n and sampling.max_new_tokens must be >= 1")


@dataclass
class GeneratorConfig:
    """`precomputed` reads generations from `path` (JSONL); `megatron` is the extension point for
    the megatron-core generator (see generation/interface.py)."""

    name: str = "precomputed"
    path: str | None = None

    def validate(self) -> None:
        from megatron_recipes.generation.interface import generator_unavailable_reason

        reason = generator_unavailable_reason(self.name)
        if reason:
            raise ConfigError(reason)
        if self.name == "precomputed" and not self.path:
            raise ConfigError("generator=precomputed needs generator.path=/path/to/generations.jsonl")


@dataclass
class EvaluateConfig:
    dataset: EvalDatasetConfig = field(default_factory=EvalDatasetConfig)
    prompt_style: str = "zero_shot"
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    answer_check: AnswerCheckConfig = field(default_factory=AnswerCheckConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    # pass@k and maj@k for each k <= sampling.n (1 is always reported).
    k_values: list[int] = field(default_factory=lambda: [1])
    output_dir: str = "outputs/evaluate/${dataset.name}-${prompt_style}"

    def validate(self) -> None:
        for section in (self.dataset, self.generator, self.sampling, self.answer_check, self.sandbox):
            section.validate()
        if self.prompt_style not in EVAL_PROMPT_STYLES:
            raise ConfigError(f"prompt_style={self.prompt_style!r} is not one of {', '.join(EVAL_PROMPT_STYLES)}")
        bad = [k for k in self.k_values if not 1 <= k <= self.sampling.n]
        if bad:
            raise ConfigError(f"k_values {bad} must be between 1 and sampling.n={self.sampling.n}")


def register_evaluation_configs() -> None:
    store = ConfigStore.instance()
    store.store(name="evaluate_schema", node=EvaluateConfig)
    store.store(group="dataset", name="dataset_schema", node=EvalDatasetConfig)
    store.store(group="generator", name="generator_schema", node=GeneratorConfig)
