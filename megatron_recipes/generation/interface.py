"""The shared generation interface: what rollouts (GRPO) and evaluation ask of a generator.

    SamplingParams(temperature, top_p, max_new_tokens, stop, n, seed)
    Generation(text, token_ids, logprobs, finish_reason)
    Generator protocol: generate(prompts, params, request_ids=None) -> list[list[Generation]]
        one inner list of `params.n` generations per prompt, in prompt order.

Implementations, registered by name in GENERATORS (evaluate.py's `generator=NAME` picks one):
  precomputed  `PrecomputedGenerations`: a JSONL file of generations made anywhere (vLLM, HF,
               another cluster), so checkpoints of any origin can be scored.
  megatron     `MegatronGenerator` (megatron_recipes.generation.megatron): batched KV-cache
               sampling from a megatron-core checkpoint; its module calls
               `register_generator("megatron", build_megatron_generator)` when first imported
               (build_generator imports it on demand).

Cost: PrecomputedGenerations holds the file's generations for the requested problems in memory
(one evaluation set, not a corpus); lookups are O(1) per prompt.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence, runtime_checkable

from stack_common.checks import require_at_least, require_non_negative, require_range
from stack_common.errors import ConfigError

FINISH_STOP = "stop"  # a stop string or end-of-document token ended it
FINISH_LENGTH = "length"  # max_new_tokens reached


@dataclass
class SamplingParams:
    """How to sample; also the evaluation recipe's `sampling` section (its defaults live here only).
    temperature 0 means greedy; `n` samples per prompt; `seed` makes sampling reproducible (sample i
    of a prompt uses seed + i where the backend supports it). Callers derive variants with
    `dataclasses.replace`, never by assignment."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 1024
    stop: list[str] = field(default_factory=list)
    n: int = 1
    seed: int = 0

    def validate(self, section: str = "sampling") -> None:
        """`section`: the key these settings sit under, for the messages."""
        require_non_negative(f"{section}.temperature", self.temperature)
        require_range(f"{section}.top_p", self.top_p, 0, 1, low_inclusive=False)
        require_at_least(f"{section}.max_new_tokens", self.max_new_tokens, 1)
        require_at_least(f"{section}.n", self.n, 1)


@dataclass
class Generation:
    """One sampled continuation.

    text: the decoded continuation (prompt excluded, stop string excluded);
    token_ids: its token ids (empty when unknown, e.g. precomputed text);
    logprobs: the sampler's log-probability of each token in token_ids (same length; empty when
        unknown) -- GRPO recomputes pi_old with the trainer, these are for diagnostics;
    finish_reason: "stop" or "length".
    """

    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str = FINISH_STOP


@runtime_checkable
class Generator(Protocol):
    def generate(
        self, prompts: Sequence[str], params: SamplingParams, request_ids: Sequence[str] | None = None
    ) -> list[list[Generation]]:
        """One list of params.n Generations per prompt. request_ids (optional) name the problems;
        generators that do not need them ignore them."""
        ...


class GeneratorUnavailable(ConfigError):
    """The configured generator cannot be built here (entry points: one line, exit status 2)."""


def prompt_key(prompt: str) -> str:
    return hashlib.sha1(prompt.encode("utf-8")).hexdigest()


class PrecomputedGenerations:
    """Generations read from JSONL. Each line is one of:

        {"id": "problem id", "generations": ["text", ...]}
        {"id": "problem id", "text": "one generation", "finish_reason": "stop"}   (repeatable)
        {"prompt": "the exact prompt", "generations": [...]}                       (no id)

    Optional per generation: "token_ids", "logprobs", "finish_reason" (with "generations" given
    as objects {"text": ..., ...}). Lookup is by request id when the caller passes request_ids
    and the file has ids, else by exact prompt text.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise GeneratorUnavailable(f"precomputed generations file {self.path} does not exist")
        self.by_id: dict[str, list[Generation]] = {}
        self.by_prompt: dict[str, list[Generation]] = {}
        with self.path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{self.path}:{number}: not JSON ({error.msg})") from None
                generations = [self._generation(g) for g in record.get("generations", [])]
                if "text" in record:
                    generations.append(self._generation(record))
                if "id" in record:
                    self.by_id.setdefault(str(record["id"]), []).extend(generations)
                elif "prompt" in record:
                    self.by_prompt.setdefault(prompt_key(record["prompt"]), []).extend(generations)
                else:
                    raise ValueError(f"{self.path}:{number}: a record needs an 'id' or a 'prompt'")

    @staticmethod
    def _generation(item) -> Generation:
        if isinstance(item, str):
            return Generation(text=item)
        return Generation(
            text=item["text"],
            token_ids=list(item.get("token_ids", [])),
            logprobs=list(item.get("logprobs", [])),
            finish_reason=item.get("finish_reason", FINISH_STOP),
        )

    def generate(
        self, prompts: Sequence[str], params: SamplingParams, request_ids: Sequence[str] | None = None
    ) -> list[list[Generation]]:
        results = []
        for index, prompt in enumerate(prompts):
            found = None
            if request_ids is not None and self.by_id:
                found = self.by_id.get(str(request_ids[index]))
            if found is None:
                found = self.by_prompt.get(prompt_key(prompt))
            name = request_ids[index] if request_ids is not None else prompt[:60]
            if found is None:
                raise KeyError(f"{self.path} has no generations for {name!r}")
            if len(found) < params.n:
                raise ValueError(
                    f"{self.path} has {len(found)} generations for {name!r} but n={params.n} were asked for"
                )
            results.append(found[: params.n])
        return results


GeneratorFactory = Callable[..., Generator]
GENERATORS: dict[str, GeneratorFactory] = {"precomputed": lambda path, **_: PrecomputedGenerations(path)}

# Generators implemented elsewhere: importing the module registers the factory.
_PLUGIN_MODULES = {"megatron": "megatron_recipes.generation.megatron"}


def register_generator(name: str, factory: GeneratorFactory) -> None:
    """Make `generator=name` available; factory(**generator_config_fields) -> Generator."""
    GENERATORS[name] = factory


def generator_unavailable_reason(name: str) -> str | None:
    """Why `generator=name` cannot be built here (None when it can), without importing it."""
    if name in GENERATORS:
        return None
    if name in _PLUGIN_MODULES:
        if importlib.util.find_spec(_PLUGIN_MODULES[name]) is None:
            return (
                f"generator '{name}' is not available yet ({_PLUGIN_MODULES[name]} does not exist); use "
                "generator=precomputed"
            )
        return None
    return f"unknown generator {name!r}; available: {', '.join(sorted([*GENERATORS, *_PLUGIN_MODULES]))}"


def build_generator(name: str, **options) -> Generator:
    """The generator registered under name, built with options (e.g. path=... for precomputed)."""
    if name not in GENERATORS and name in _PLUGIN_MODULES:
        try:
            importlib.import_module(_PLUGIN_MODULES[name])
        except ModuleNotFoundError as error:
            if error.name and _PLUGIN_MODULES[name].startswith(error.name):
                raise GeneratorUnavailable(
                    f"generator '{name}' is not available yet ({_PLUGIN_MODULES[name]} does not exist); use "
                    "generator=precomputed"
                ) from None
            raise
    if name not in GENERATORS:
        raise GeneratorUnavailable(f"unknown generator {name!r}; available: {', '.join(sorted(GENERATORS))}")
    return GENERATORS[name](**options)
