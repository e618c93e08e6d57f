"""The evaluation recipe's sections: `dataset` (datasets.py), `harness` (harness.py: chunks,
resumption, tool and code limits) and `suite` (suite.py: several benchmarks x checkpoints in one
table). The recipe's schema, EvaluateConfig, is in megatron_recipes/config.py; its prompt styles
are prompts.py's registry."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from megatron_recipes.evaluation.datasets import DATASETS, reads_local_files
from megatron_recipes.evaluation.prompts import PROMPT_STYLES
from stack_common.checks import require_at_least, require_choice, require_positive, require_range
from stack_common.errors import ConfigError

_METRIC = re.compile(r"^(accuracy|(pass|cons)@(\d+))$")


@dataclass
class EvalDatasetConfig:
    """Which problems: a benchmark of datasets.DATASETS (champ is offline; the others read the
    user's local files at `path`), filtered by subject / level / date, the first `limit`."""

    name: str = "champ"
    path: str | None = None
    limit: int | None = None
    subjects: list[str] = field(default_factory=list)
    levels: list[str] = field(default_factory=list)
    # Seed of the choice order of benchmarks whose choices are shuffled (GPQA).
    choice_seed: int = 0
    # Dated problems (LiveCodeBench, Codeforces): keep those from/to these ISO dates ("" = open).
    date_from: str = ""
    date_to: str = ""

    def validate(self) -> None:
        require_choice("dataset.name", self.name, DATASETS)
        if reads_local_files(self.name) and not self.path:
            raise ConfigError(f"dataset={self.name} reads local files: set dataset.path=/path/to/{self.name}")
        if self.limit is not None:  # null = all
            require_at_least("dataset.limit", self.limit, 1)
        for key in ("date_from", "date_to"):
            value = getattr(self, key)
            if value and not re.fullmatch(r"\d{4}(-\d{2}(-\d{2})?)?", value):
                raise ConfigError(f"dataset.{key}={value!r} is not an ISO date (YYYY, YYYY-MM or YYYY-MM-DD)")


@dataclass
class HarnessConfig:
    """How a benchmark is run: generation chunks (the unit of resumption), progress, the
    tool-integrated step limit and the code judge's limits."""

    # Problems per generator call; a killed run resumes at the first chunk not yet scored.
    chunk_size: int = 32
    # Continue a run found in output_dir (same settings); false starts it again.
    resume: bool = True
    progress_interval_s: float = 30.0
    # Tool-integrated prompting: sandboxed executions per sample, and output characters fed back.
    tool_max_steps: int = 4
    tool_max_output_characters: int = 800
    # Code problems: seconds per test (unless the problem gives its own) and per sample (all tests).
    code_time_limit_s: float = 6.0
    code_wall_seconds: float = 120.0

    def validate(self) -> None:
        require_at_least("harness.chunk_size", self.chunk_size, 1)
        require_positive("harness.progress_interval_s", self.progress_interval_s)
        require_at_least("harness.tool_max_steps", self.tool_max_steps, 0)
        require_at_least("harness.tool_max_output_characters", self.tool_max_output_characters, 16)
        require_positive("harness.code_time_limit_s", self.code_time_limit_s)
        require_positive("harness.code_wall_seconds", self.code_wall_seconds)


@dataclass
class SuiteBenchmark:
    """One column group of a suite table: a benchmark asked in one prompt style. Unset values
    (empty, null) take the benchmark's defaults (datasets.DATASETS) or the top-level `sampling`."""

    benchmark: str = ""
    prompt_style: str = ""
    # A file or directory; relative paths are under suite.benchmarks_dir; "" = the benchmark's usual paths.
    path: str = ""
    column: str = ""  # table header; "" = the benchmark's title (and the style when not its default)
    exemplars: str = ""
    n: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_new_tokens: int | None = None
    # Metrics shown in the table, each its own column: accuracy, pass@K, cons@K (K <= n).
    metrics: list[str] = field(default_factory=lambda: ["accuracy"])
    limit: int | None = None

    def validate(self, key: str, default_n: int) -> None:
        require_choice(f"{key}.benchmark", self.benchmark, DATASETS)
        style = self.prompt_style or DATASETS[self.benchmark].default_style
        require_choice(f"{key}.prompt_style", style, PROMPT_STYLES)
        if DATASETS[self.benchmark].kind not in PROMPT_STYLES[style].kinds:
            raise ConfigError(
                f"{key}.prompt_style={style} cannot ask {self.benchmark}'s {DATASETS[self.benchmark].kind} problems"
            )
        n = self.n if self.n is not None else default_n
        require_at_least(f"{key}.n", n, 1)
        if self.temperature is not None:
            require_at_least(f"{key}.temperature", self.temperature, 0)
        if self.top_p is not None:
            require_range(f"{key}.top_p", self.top_p, 0, 1, low_inclusive=False)
        if self.max_new_tokens is not None:
            require_at_least(f"{key}.max_new_tokens", self.max_new_tokens, 1)
        if self.limit is not None:
            require_at_least(f"{key}.limit", self.limit, 1)
        if not self.metrics:
            raise ConfigError(f"{key}.metrics is empty: name at least one of accuracy, pass@K, cons@K")
        for index, metric in enumerate(self.metrics):
            match = _METRIC.match(metric)
            if match is None:
                raise ConfigError(f"{key}.metrics[{index}]={metric!r} is not accuracy, pass@K or cons@K")
            if match.group(3) and not 1 <= int(match.group(3)) <= n:
                raise ConfigError(f"{key}.metrics[{index}]={metric} needs K between 1 and n={n}")
            if match.group(2) == "cons" and DATASETS[self.benchmark].kind == "code":
                raise ConfigError(f"{key}.metrics[{index}]={metric}: majority voting is not defined for code")

    def k_values(self) -> list[int]:
        return sorted({1, *(int(m.split("@")[1]) for m in self.metrics if "@" in m)})


@dataclass
class SuiteConfig:
    """A suite (python -m megatron_recipes.evaluate suite=deepseekmath | deepseekmath_instruct |
    r1 | chain): every listed benchmark whose files are present, on every checkpoint, one table."""

    name: str = ""
    # Where the benchmarks' files are (each found by its usual layouts, datasets.BenchmarkSpec.layouts).
    benchmarks_dir: str = ""
    benchmarks: list[SuiteBenchmark] = field(default_factory=list)
    # The table's rows: checkpoints (generator=megatron) or generation files / directories of
    # <column>.jsonl files (generator=precomputed).
    checkpoints: list[str] = field(default_factory=list)
    # Row names (default: each checkpoint's run directory name).
    names: list[str] = field(default_factory=list)
    # A launch/local/chain.py work_dir: rows base, sft, grpo from its pretrain/sft/grpo checkpoints
    # (those present), benchmarks_dir defaulting to its inputs/benchmarks.
    chain_dir: str = ""
    # Keep only these columns or benchmarks (empty: all).
    only: list[str] = field(default_factory=list)

    def active(self) -> bool:
        return bool(self.name or self.benchmarks)

    def validate(self, default_n: int) -> None:
        if not self.active():
            return
        if not self.benchmarks:
            raise ConfigError(f"suite={self.name} lists no benchmarks")
        for index, benchmark in enumerate(self.benchmarks):
            benchmark.validate(f"suite.benchmarks[{index}]", default_n)
        if not self.checkpoints and not self.chain_dir:
            raise ConfigError("a suite needs the rows to evaluate: suite.checkpoints=[...] or suite.chain_dir=...")
        if self.names and len(self.names) != len(self.checkpoints):
            raise ConfigError(f"suite.names has {len(self.names)} names for {len(self.checkpoints)} suite.checkpoints")
        if len(set(self.names)) != len(self.names):
            raise ConfigError(f"suite.names={self.names} repeats a name")
