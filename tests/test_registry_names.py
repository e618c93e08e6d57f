"""Every registry of pluggable names (advantage estimators, KL estimators, loss aggregations,
rewards, step rewards, generators, prompt styles, evaluation datasets, benchmark formats, answer
extraction strategies, Beam runners) is the only list of its names: no tuple, list, set or dict
literal elsewhere in the project's source restates them, and the configs accept exactly what the
registries hold."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

from megatron_recipes.rl.config import RlConfig
from megatron_recipes.rl.objectives import check_objective_names, register_kl_estimator
from stack_common.errors import ConfigError
from tests.support import REPO_ROOT

SOURCE_DIRECTORIES = ("beam_pipelines", "megatron_recipes", "stack_common", "launch", "benchmarks")
# registry -> (its module, the attributes holding its names)
REGISTRIES = {
    "advantage estimators": ("megatron_recipes.rl.objectives", ("ADVANTAGE_ESTIMATORS",)),
    "KL estimators": ("megatron_recipes.rl.objectives", ("KL_ESTIMATORS",)),
    "loss aggregations": ("megatron_recipes.rl.objectives", ("LOSS_AGGREGATIONS",)),
    "rewards": ("megatron_recipes.rewards.functions", ("REWARD_FUNCTIONS",)),
    "step rewards": ("megatron_recipes.rl.step_rewards", ("STEP_REWARDS",)),
    "generators": ("megatron_recipes.generation.interface", ("GENERATORS", "_PLUGIN_MODULES")),
    "prompt styles": ("megatron_recipes.evaluation.prompts", ("PROMPT_STYLES",)),
    "evaluation datasets": ("megatron_recipes.evaluation.datasets", ("DATASETS",)),
    "answer extraction strategies": ("megatron_recipes.rewards.extraction", ("EXTRACTION_STRATEGIES",)),
    "benchmark formats": ("beam_pipelines.transforms.config", ("FORMAT_FIELDS",)),
    "Beam runners": ("beam_pipelines.options", ("RUNNERS",)),
}


def _registered_in_the_project(container) -> set[str]:
    """The registry's names, leaving out entries other tests registered (their functions live
    in tests/), so the check does not depend on the order tests run in."""
    if isinstance(container, dict):
        return {name for name, value in container.items() if not getattr(value, "__module__", "").startswith("tests")}
    return set(container)


def registry_names() -> dict[str, tuple[str, frozenset[str]]]:
    names = {}
    for registry, (module_name, attributes) in REGISTRIES.items():
        module = importlib.import_module(module_name)
        found = set()
        for attribute in attributes:
            found |= _registered_in_the_project(getattr(module, attribute))
        names[registry] = (module_name, frozenset(found))
    return names


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)


def string_literals(source: str):
    """(line, strings) of every tuple/list/set literal and every dict literal's keys whose
    elements are string constants (at least two)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            elements = node.elts
        elif isinstance(node, ast.Dict):
            elements = [key for key in node.keys if key is not None]
        else:
            continue
        strings = {e.value for e in elements if isinstance(e, ast.Constant) and isinstance(e.value, str)}
        if len(strings) >= 2:
            yield node.lineno, strings


def restatements(source: str, module_name: str, names: dict[str, tuple[str, frozenset[str]]]) -> list[str]:
    found = []
    for line, strings in string_literals(source):
        for registry, (home, registered) in names.items():
            if module_name != home and len(registered) >= 2 and registered <= strings:
                found.append(f"{module_name}:{line} lists every name of the {registry} registry ({home})")
    return found


def test_no_literal_restates_a_registry():
    names = registry_names()
    found = []
    for directory in SOURCE_DIRECTORIES:
        for path in sorted((REPO_ROOT / directory).rglob("*.py")):
            found += restatements(path.read_text(encoding="utf-8"), _module_name(path), names)
    assert not found, found


def test_the_scan_catches_a_restated_registry():
    names = registry_names()
    copied = 'GRPO_KL_ESTIMATORS = ("k1", "k2", "k3")\nchoices = {"sequence_mean": 1, "token_mean": 2}\n'
    assert restatements(copied, "megatron_recipes.config", names) == [
        "megatron_recipes.config:1 lists every name of the KL estimators registry (megatron_recipes.rl.objectives)",
        "megatron_recipes.config:2 lists every name of the loss aggregations registry (megatron_recipes.rl.objectives)",
    ]
    # A choice of some names (one reward, two of the six benchmark formats) is not a copy.
    assert restatements('defaults = ["math_accuracy"]\npair = ("gsm8k", "math")\n', "x", names) == []


def test_every_registration_function_belongs_to_a_listed_registry():
    """A new `register_*` registry must be added above, so that it is checked too."""
    homes = {module for module, _ in REGISTRIES.values()}
    unlisted = []
    for directory in SOURCE_DIRECTORIES:
        for path in sorted((REPO_ROOT / directory).rglob("*.py")):
            for name in re.findall(r"^def (register_\w+)\(", path.read_text(encoding="utf-8"), re.M):
                if not name.endswith("configs") and _module_name(path) not in homes:
                    unlisted.append(f"{_module_name(path)}.{name}")
    assert not unlisted, unlisted


def test_the_rl_config_accepts_exactly_what_the_registries_hold():
    with pytest.raises(ConfigError, match="rl.kl_estimator='k_test' is not one of k1, k2, k3"):
        check_objective_names(RlConfig(kl_estimator="k_test"))

    @register_kl_estimator("k_test")
    def zero_kl(logp, ref_logp):
        return (logp - ref_logp) * 0

    check_objective_names(RlConfig(kl_estimator="k_test"))
    with pytest.raises(ConfigError, match=r"rl.rewards\[1\]='no_such_reward' is not one of .*math_accuracy"):
        RlConfig(rewards=["math_accuracy", "no_such_reward"], reward_weights=[1.0, 1.0]).validate()
