"""The recipes' top-level schemas (one per entry point: pretrain, sft, grpo, evaluate) and the
Hydra registration of every schema. Each section's schema, with its defaults and checks, lives
beside the component it configures:

    model        models/config.py      parallelism  runtime/config.py
    optimizer, trainer, checkpoint     training/config.py
    data, sft_data, chat_template, prompts, eval_prompts    data/config.py
    rl           rl/config.py          answer_check rewards/config.py
    sandbox      sandbox/config.py     generator    generation/config.py
    sampling     generation/interface.py (SamplingParams)
    dataset      evaluation/config.py  convert      convert/config.py (its entry point's schema)
    corpus       beam_pipelines/io/config.py

YAML files under `conf/` pick presets and set only what differs from these defaults. The CLI
(`stack_common.cli.hydra_entry_point`) runs `validate()` after composition and before any
process group or model exists, so a bad value fails with one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

from beam_pipelines.config import register_configs as register_corpus_configs
from beam_pipelines.io.config import CorpusConfig
from megatron_recipes.convert.config import ConvertConfig
from megatron_recipes.data.config import (
    ARITHMETIC_TASK,
    ChatTemplateConfig,
    DataConfig,
    PromptSourceConfig,
    SftDataConfig,
)
from megatron_recipes.evaluation.config import EvalDatasetConfig
from megatron_recipes.evaluation.prompts import PROMPT_STYLES
from megatron_recipes.generation.config import GeneratorConfig
from megatron_recipes.generation.interface import SamplingParams
from megatron_recipes.models.config import ModelConfig
from megatron_recipes.rewards.config import AnswerCheckConfig
from megatron_recipes.rl.config import RlConfig
from megatron_recipes.runtime.config import ParallelismConfig
from megatron_recipes.sandbox.config import SandboxConfig
from megatron_recipes.training.config import (
    CheckpointConfig,
    OptimizerConfig,
    TrainerConfig,
    validate_init_sources,
    validate_training_layout,
    validate_warmup_fits,
)
from stack_common.checks import require_choice
from stack_common.errors import ConfigError

# launch/local/chain.py imports these two from here; they live in data/config.py.
__all__ = ["register_configs"]


@dataclass
class PretrainConfig:
    """python -m megatron_recipes.pretrain: one composition of the groups below (conf/pretrain.yaml)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    parallelism: ParallelismConfig = field(default_factory=ParallelismConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    # Where the corpus build wrote its outputs; data presets point under corpus.work_dir.
    corpus: CorpusConfig = field(default_factory=CorpusConfig)

    def validate(self) -> None:
        for section in (self.model, self.parallelism, self.optimizer, self.data, self.trainer, self.checkpoint):
            section.validate()
        validate_init_sources(self.model, self.checkpoint)
        validate_training_layout(self.model, self.parallelism, self.trainer, self.data.seq_length)
        validate_warmup_fits(self.optimizer, self.trainer)


@dataclass
class SftConfig:
    """python -m megatron_recipes.sft (conf/sft.yaml)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    parallelism: ParallelismConfig = field(default_factory=ParallelismConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    sft_data: SftDataConfig = field(default_factory=SftDataConfig)
    chat_template: ChatTemplateConfig = field(default_factory=ChatTemplateConfig)

    def validate(self) -> None:
        for section in (
            self.model,
            self.parallelism,
            self.optimizer,
            self.trainer,
            self.checkpoint,
            self.sft_data,
            self.chat_template,
        ):
            section.validate()
        if self.sft_data.seq_length > self.model.max_position_embeddings:
            raise ConfigError(
                f"sft_data.seq_length={self.sft_data.seq_length} exceeds "
                f"model.max_position_embeddings={self.model.max_position_embeddings}"
            )
        validate_training_layout(self.model, self.parallelism, self.trainer, self.sft_data.seq_length)
        validate_warmup_fits(self.optimizer, self.trainer)


@dataclass
class GrpoConfig:
    """python -m megatron_recipes.grpo (conf/grpo.yaml). trainer.train_steps counts GRPO steps
    (rollouts); trainer.global_batch_size is the outputs per optimizer step (a mini-batch)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    parallelism: ParallelismConfig = field(default_factory=ParallelismConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    rl: RlConfig = field(default_factory=RlConfig)
    prompts: PromptSourceConfig = field(default_factory=PromptSourceConfig)
    # Held-out questions for rl.eval_interval: the held-out side of the hash split (data/config.py),
    # checked against the questions GRPO trains on (grpo.plan_grpo drops and counts any overlap).
    eval_prompts: PromptSourceConfig = field(default_factory=lambda: PromptSourceConfig(split="held_out", limit=64))
    chat_template: ChatTemplateConfig = field(default_factory=ChatTemplateConfig)
    answer_check: AnswerCheckConfig = field(default_factory=AnswerCheckConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    # tokenizer.json or its directory; empty = the one the init checkpoint's run recorded, else DeepSeek's.
    tokenizer: str = ""

    def rollout_outputs(self) -> int:
        return self.rl.questions_per_step * self.rl.group_size

    def validate(self) -> None:
        for section in (
            self.model,
            self.parallelism,
            self.optimizer,
            self.trainer,
            self.checkpoint,
            self.rl,
            self.prompts,
            self.chat_template,
            self.answer_check,
            self.sandbox,
        ):
            section.validate()
        if self.rl.eval_interval:
            self.eval_prompts.validate("eval_prompts")
        validate_training_layout(self.model, self.parallelism, self.trainer, None)
        if self.parallelism.pipeline_model_parallel_size != 1 or self.parallelism.virtual_pipeline_model_parallel_size:
            raise ConfigError(
                "GRPO generates with the whole model on each rank: parallelism.pipeline_model_parallel_size must be 1"
            )
        if self.parallelism.sequence_parallel:
            raise ConfigError(
                "GRPO rollouts use megatron's static inference batching, which has no sequence parallelism: set "
                "parallelism.sequence_parallel=false"
            )
        if self.parallelism.overlap_param_gather:
            raise ConfigError(
                "GRPO rollouts read the parameters outside the training schedule: set "
                "parallelism.overlap_param_gather=false"
                " (the distributed optimizer then gathers them at the end of each step)"
            )
        data_parallel = self.parallelism.data_parallel_size()
        if self.rl.questions_per_step % data_parallel:
            raise ConfigError(
                f"rl.questions_per_step={self.rl.questions_per_step} is not divisible by the data-parallel size "
                f"{data_parallel}"
            )
        if self.rollout_outputs() % self.trainer.global_batch_size:
            raise ConfigError(
                f"rl.questions_per_step x rl.group_size = {self.rollout_outputs()} outputs is not a multiple of"
                f" trainer.global_batch_size={self.trainer.global_batch_size} (the outputs per optimizer step)"
            )
        if self.rl.max_new_tokens >= self.model.max_position_embeddings:
            raise ConfigError(
                f"rl.max_new_tokens={self.rl.max_new_tokens} leaves no room for the prompt in "
                f"model.max_position_embeddings={self.model.max_position_embeddings}"
            )


@dataclass
class EvaluateConfig:
    """python -m megatron_recipes.evaluate (conf/evaluate.yaml)."""

    dataset: EvalDatasetConfig = field(default_factory=EvalDatasetConfig)
    prompt_style: str = "zero_shot"
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    sampling: SamplingParams = field(default_factory=SamplingParams)
    answer_check: AnswerCheckConfig = field(default_factory=AnswerCheckConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    # pass@k and maj@k for each k <= sampling.n (1 is always reported).
    k_values: list[int] = field(default_factory=lambda: [1])
    output_dir: str = "outputs/evaluate/${dataset.name}-${prompt_style}"

    def validate(self) -> None:
        for section in (self.dataset, self.generator, self.sampling, self.answer_check, self.sandbox):
            section.validate()
        require_choice("prompt_style", self.prompt_style, PROMPT_STYLES)
        for index, k in enumerate(self.k_values):
            if not 1 <= k <= self.sampling.n:
                raise ConfigError(f"k_values[{index}]={k} must lie between 1 and sampling.n={self.sampling.n}")


def register_configs() -> None:
    """Register every schema (idempotent). Group YAML files name them in their defaults lists."""
    register_corpus_configs()  # the `corpus` group, shared with the Beam pipelines
    store = ConfigStore.instance()
    store.store(name="pretrain_schema", node=PretrainConfig)
    store.store(name="sft_schema", node=SftConfig)
    store.store(name="grpo_schema", node=GrpoConfig)
    store.store(name="evaluate_schema", node=EvaluateConfig)
    store.store(name="convert_schema", node=ConvertConfig)
    store.store(group="model", name="model_schema", node=ModelConfig)
    store.store(group="parallelism", name="parallelism_schema", node=ParallelismConfig)
    store.store(group="optimizer", name="optimizer_schema", node=OptimizerConfig)
    store.store(group="data", name="data_schema", node=DataConfig)
    store.store(group="trainer", name="trainer_schema", node=TrainerConfig)
    store.store(group="rl", name="rl_schema", node=RlConfig)
    store.store(group="dataset", name="dataset_schema", node=EvalDatasetConfig)
    store.store(group="generator", name="generator_schema", node=GeneratorConfig)
    # `- /prompts: arithmetic` in an experiment: reasoning-gym's one-digit sums (data/config.py).
    store.store(group="prompts", name="arithmetic", node=PromptSourceConfig(tasks=[ARITHMETIC_TASK]))
