"""The recipes' top-level schemas (one per entry point: pretrain, sft, grpo, evaluate,
reward_model, label_steps, iterative_rl) and the Hydra registration of every schema. Each
section's schema, with its defaults and checks, lives beside the component it configures:

    model        models/config.py      parallelism  runtime/config.py
    optimizer, trainer, checkpoint     training/config.py
    data, sft_data, chat_template, prompts, eval_prompts    data/config.py
    rl           rl/config.py          answer_check rewards/config.py
    reward_model, label   reward_models/config.py
    sandbox      sandbox/config.py     generator    generation/config.py
    sampling     generation/interface.py (SamplingParams)
    dataset, harness, suite            evaluation/config.py
    convert      convert/config.py (its entry point's schema)
    acceptance, filters                rejection/config.py
    corpus       beam_pipelines/io/config.py

YAML files under `conf/` pick presets and set only what differs from these defaults. The CLI
(`stack_common.cli.hydra_entry_point`) runs `validate()` after composition and before any
process group or model exists, so a bad value fails with one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

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
from megatron_recipes.data.think_template import THINK_QUESTION_TEMPLATE
from megatron_recipes.evaluation.config import EvalDatasetConfig, HarnessConfig, SuiteConfig
from megatron_recipes.evaluation.datasets import DATASETS
from megatron_recipes.evaluation.prompts import PROMPT_STYLES
from megatron_recipes.generation.config import GeneratorConfig
from megatron_recipes.generation.interface import SamplingParams
from megatron_recipes.models.config import ModelConfig
from megatron_recipes.rejection.config import AcceptanceConfig, FilterConfig
from megatron_recipes.reward_models.config import LabelConfig, RewardModelSettings
from megatron_recipes.rewards.config import AnswerCheckConfig
from megatron_recipes.rl.config import IterativeConfig, RlConfig
from megatron_recipes.runtime.config import DEVICES, PRECISIONS, ParallelismConfig
from megatron_recipes.sandbox.config import SandboxConfig
from megatron_recipes.training.config import (
    CheckpointConfig,
    OptimizerConfig,
    TrainerConfig,
    validate_init_sources,
    validate_training_layout,
    validate_warmup_fits,
)
from stack_common.checks import require_at_least, require_choice
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
class RewardModelConfig:
    """python -m megatron_recipes.reward_model (conf/reward_model.yaml): an outcome or process
    reward model (reward_model.kind) trained from a policy or base checkpoint (checkpoint.init_from,
    or model.init_from_hf); the scalar head is new, every other weight comes from there."""

    model: ModelConfig = field(default_factory=ModelConfig)
    parallelism: ParallelismConfig = field(default_factory=ParallelismConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    reward_model: RewardModelSettings = field(default_factory=RewardModelSettings)
    # tokenizer.json or its directory; empty = the one the init checkpoint's run recorded, else DeepSeek's.
    tokenizer: str = ""

    def validate(self) -> None:
        for section in (
            self.model,
            self.parallelism,
            self.optimizer,
            self.trainer,
            self.checkpoint,
            self.reward_model,
        ):
            section.validate()
        validate_init_sources(self.model, self.checkpoint)
        validate_training_layout(self.model, self.parallelism, self.trainer, self.reward_model.seq_length)
        validate_warmup_fits(self.optimizer, self.trainer)
        self.reward_model.replayed_per_batch(self.trainer.global_batch_size)
        if self.reward_model.seq_length > self.model.max_position_embeddings:
            raise ConfigError(
                f"reward_model.seq_length={self.reward_model.seq_length} exceeds "
                f"model.max_position_embeddings={self.model.max_position_embeddings}"
            )


@dataclass
class LabelStepsConfig:
    """python -m megatron_recipes.label_steps (conf/label_steps.yaml): sample solutions from a
    policy checkpoint and label them (label.method: outcome, or Math-Shepherd step labels from a
    completer checkpoint), written as sharded JSONL that reward_model.train_paths reads."""

    # The checkpoint solutions are sampled from (a run or iter_* directory).
    policy: str | None = None
    # The checkpoint that completes step prefixes (Math-Shepherd); null = the policy (the SFT
    # model in a first round; iterative RL passes the SFT model explicitly).
    completer: str | None = None
    # tokenizer.json or its directory; empty = the one the policy's run recorded.
    tokenizer: str = ""
    prompts: PromptSourceConfig = field(default_factory=PromptSourceConfig)
    chat_template: ChatTemplateConfig = field(default_factory=ChatTemplateConfig)
    samples_per_question: int = 4
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=1.0, max_new_tokens=1024))
    label: LabelConfig = field(default_factory=LabelConfig)
    answer_check: AnswerCheckConfig = field(default_factory=AnswerCheckConfig)
    output_dir: str = "outputs/label_steps"
    # Questions per output shard: a shard is the unit of resumption and of data-parallel work.
    questions_per_shard: int = 64
    device: str = "auto"
    precision: str = "auto"
    tensor_model_parallel_size: int = 1
    max_batch_size: int = 64
    seed: int = 1234

    def validate(self) -> None:
        if not self.policy:
            raise ConfigError("label_steps needs policy=/path/to/checkpoints (the model whose solutions are labelled)")
        self.prompts.validate()
        self.chat_template.validate()
        self.sampling.validate()
        self.label.validate()
        self.answer_check.validate()
        require_at_least("samples_per_question", self.samples_per_question, 1)
        require_at_least("questions_per_shard", self.questions_per_shard, 1)
        require_choice("device", self.device, DEVICES)
        require_choice("precision", self.precision, PRECISIONS)
        require_at_least("tensor_model_parallel_size", self.tensor_model_parallel_size, 1)
        require_at_least("max_batch_size", self.max_batch_size, 1)


@dataclass
class IterativeRlConfig:
    """python -m megatron_recipes.iterative_rl (conf/iterative_rl.yaml): iterative RL, each stage a
    run of the grpo, label_steps and reward_model entry points (rl/iterative.py)."""

    iterative: IterativeConfig = field(default_factory=IterativeConfig)

    def validate(self) -> None:
        self.iterative.validate()


@dataclass
class EvaluateConfig:
    """python -m megatron_recipes.evaluate (conf/evaluate.yaml): one benchmark (`dataset`), or a
    suite of benchmarks x checkpoints (`suite=NAME`, evaluation/suite.py)."""

    dataset: EvalDatasetConfig = field(default_factory=EvalDatasetConfig)
    prompt_style: str = "zero_shot"
    # Few-shot exemplars for few-shot styles: a .txt few-shot prefix used verbatim, or .jsonl/.json
    # records {question, solution, answer}; empty = the style's own (evaluation/prompts.py).
    exemplars: str = ""
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    sampling: SamplingParams = field(default_factory=SamplingParams)
    answer_check: AnswerCheckConfig = field(default_factory=AnswerCheckConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    harness: HarnessConfig = field(default_factory=HarnessConfig)
    suite: SuiteConfig = field(default_factory=SuiteConfig)
    # pass@k and cons@k for each k <= sampling.n (1 is always reported).
    k_values: list[int] = field(default_factory=lambda: [1])
    # Empty: outputs/evaluate/<dataset>-<prompt_style>, or outputs/evaluate/suite-<name> for a suite.
    output_dir: str = ""

    def resolved_output_dir(self) -> str:
        if self.output_dir:
            return self.output_dir
        if self.suite.active():
            return f"outputs/evaluate/suite-{self.suite.name or 'custom'}"
        return f"outputs/evaluate/{self.dataset.name}-{self.prompt_style}"

    def validate(self) -> None:
        for section in (self.sampling, self.answer_check, self.sandbox, self.harness):
            section.validate()
        if self.suite.active():
            # The suite's rows name the checkpoints (or generation files) the generator reads.
            replace(self.generator, checkpoint="suite.checkpoints", path="suite.checkpoints").validate()
            self.suite.validate(self.sampling.n)
            return
        self.generator.validate()
        self.dataset.validate()
        require_choice("prompt_style", self.prompt_style, PROMPT_STYLES)
        kind = DATASETS[self.dataset.name].kind
        if kind not in PROMPT_STYLES[self.prompt_style].kinds:
            raise ConfigError(
                f"prompt_style={self.prompt_style} cannot ask {self.dataset.name}'s {kind} problems; styles for them: "
                + ", ".join(name for name, style in PROMPT_STYLES.items() if kind in style.kinds)
            )
        if self.exemplars and not PROMPT_STYLES[self.prompt_style].few_shot:
            raise ConfigError(f"exemplars={self.exemplars} but prompt_style={self.prompt_style} is zero-shot")
        for index, k in enumerate(self.k_values):
            if not 1 <= k <= self.sampling.n:
                raise ConfigError(f"k_values[{index}]={k} must lie between 1 and sampling.n={self.sampling.n}")


@dataclass
class RejectionSampleConfig:
    """python -m megatron_recipes.rejection_sample (conf/rejection_sample.yaml): `sampling.n`
    samples per prompt of `prompts` from `generator` (a checkpoint, or precomputed generations),
    judged by `acceptance` and `filters`, written as SFT data under output_dir
    (megatron_recipes/rejection/sampler.py)."""

    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    prompts: PromptSourceConfig = field(default_factory=PromptSourceConfig)
    chat_template: ChatTemplateConfig = field(default_factory=ChatTemplateConfig)
    # R1 samples several answers per prompt at temperature 1 and keeps the correct ones.
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=1.0, n=16))
    acceptance: AcceptanceConfig = field(default_factory=AcceptanceConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    answer_check: AnswerCheckConfig = field(default_factory=AnswerCheckConfig)
    # Prompts per resumable unit of work (one output shard per chunk and rank).
    prompts_per_chunk: int = 64
    # The first max_prompts questions of the stream (null = all it holds).
    max_prompts: int | None = None
    output_dir: str = "outputs/rejection_sample"

    def validate(self) -> None:
        for section in (self.generator, self.chat_template, self.acceptance, self.filters, self.answer_check):
            section.validate()
        self.prompts.validate("prompts")
        self.sampling.validate("sampling")
        require_at_least("prompts_per_chunk", self.prompts_per_chunk, 1)
        if self.max_prompts is not None:
            require_at_least("max_prompts", self.max_prompts, 1)


def register_configs() -> None:
    """Register every schema (idempotent). Group YAML files name them in their defaults lists."""
    register_corpus_configs()  # the `corpus` group, shared with the Beam pipelines
    store = ConfigStore.instance()
    store.store(name="pretrain_schema", node=PretrainConfig)
    store.store(name="sft_schema", node=SftConfig)
    store.store(name="grpo_schema", node=GrpoConfig)
    store.store(name="evaluate_schema", node=EvaluateConfig)
    store.store(name="reward_model_schema", node=RewardModelConfig)
    store.store(name="label_steps_schema", node=LabelStepsConfig)
    store.store(name="iterative_rl_schema", node=IterativeRlConfig)
    store.store(name="convert_schema", node=ConvertConfig)
    store.store(name="rejection_sample_schema", node=RejectionSampleConfig)
    store.store(group="model", name="model_schema", node=ModelConfig)
    store.store(group="parallelism", name="parallelism_schema", node=ParallelismConfig)
    store.store(group="optimizer", name="optimizer_schema", node=OptimizerConfig)
    store.store(group="data", name="data_schema", node=DataConfig)
    store.store(group="trainer", name="trainer_schema", node=TrainerConfig)
    store.store(group="rl", name="rl_schema", node=RlConfig)
    store.store(group="dataset", name="dataset_schema", node=EvalDatasetConfig)
    store.store(group="suite", name="suite_schema", node=SuiteConfig)
    store.store(group="generator", name="generator_schema", node=GeneratorConfig)
    # `- /prompts: arithmetic` in an experiment: reasoning-gym's one-digit sums (data/config.py).
    store.store(group="prompts", name="arithmetic", node=PromptSourceConfig(tasks=[ARITHMETIC_TASK]))
    # The R1 presets' questions in the R1 prompt (data/think_template.py, the one copy of its
    # wording): a question file (`- /prompts: r1_questions`, then prompts.path=...; also
    # `- /prompts@eval_prompts: r1_questions`) or reasoning-gym's sums (`r1_arithmetic`).
    store.store(
        group="prompts",
        name="r1_questions",
        node=PromptSourceConfig(source="jsonl", question_template=THINK_QUESTION_TEMPLATE),
    )
    store.store(
        group="prompts",
        name="r1_arithmetic",
        node=PromptSourceConfig(tasks=[ARITHMETIC_TASK], question_template=THINK_QUESTION_TEMPLATE),
    )
    # SFT data whose user turns are put in the R1 prompt (`- /sft_data: r1_think`).
    store.store(group="sft_data", name="r1_think", node=SftDataConfig(question_template=THINK_QUESTION_TEMPLATE))
