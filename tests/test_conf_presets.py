"""Every default lives in one place: a YAML file under conf/ may only set what differs from the value
it would otherwise get. For each file, the composition it takes part in is built twice, once as it
is and once with the file's own values removed (its defaults list kept); a key the file sets whose
value is the same both times restates a default and fails the test.

Contexts: a group file (conf/model/tiny.yaml) is composed on its own (its schema plus the presets
it inherits); an experiment (`# @package _global_`) inside every top-level config it composes
with; a top-level file (conf/pretrain.yaml) as the bare command.
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from beam_pipelines.config import register_configs as register_corpus_configs
from megatron_recipes.config import register_configs
from tests.support import REPO_ROOT

CONF = REPO_ROOT / "conf"
TOP_LEVEL = sorted(path.stem for path in CONF.glob("*.yaml"))
GROUP_FILES = sorted(
    path.relative_to(CONF).with_suffix("").as_posix()
    for path in CONF.glob("*/*.yaml")
    if path.parent.name != "experiment"
)
EXPERIMENTS = sorted(path.stem for path in (CONF / "experiment").glob("*.yaml"))
MISSING = object()


def _register_everything() -> None:
    register_corpus_configs()
    register_configs()
    spec = importlib.util.spec_from_file_location("chain_launcher", REPO_ROOT / "launch" / "local" / "chain.py")
    chain = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = chain  # its dataclasses look their module up while being defined
    spec.loader.exec_module(chain)
    chain.register_chain_configs()


def _compose(conf_dir: Path, name: str, overrides: list[str]) -> dict:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            config = compose(config_name=name, overrides=overrides)
        values = OmegaConf.to_container(config, resolve=False)
        values.pop("hydra", None)
        return values
    finally:
        GlobalHydra.instance().clear()


def _leaves(body: dict, prefix: tuple[str, ...] = ()):
    for key, value in body.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key)


def _lookup(config: dict, path: tuple[str, ...]):
    node = config
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return MISSING
        node = node[key]
    return node


def _without_own_values(conf: Path, relative: str, tmp_path: Path) -> Path:
    """A copy of `conf` in which `relative` keeps its package line and defaults list only."""
    copy = tmp_path / "without"
    shutil.copytree(conf, copy)
    path = copy / relative
    text = path.read_text()
    header = [line for line in text.splitlines() if line.startswith("# @package")]
    document = yaml.safe_load(text) or {}
    kept = {key: document[key] for key in ("defaults", "hydra") if key in document}
    path.write_text("\n".join([*header, yaml.safe_dump(kept, sort_keys=False)]))
    return copy


def _own_values(conf: Path, relative: str) -> dict:
    document = yaml.safe_load((conf / relative).read_text()) or {}
    return {key: value for key, value in document.items() if key not in ("defaults", "hydra")}


def _restated(
    relative: str, name: str, overrides: list[str], prefix: tuple[str, ...], tmp_path: Path, conf: Path = CONF
) -> list[str]:
    """`key=value` for each value `relative` sets that equals what the composition has without it."""
    own = _own_values(conf, relative)
    if not own:
        return []
    with_file = _compose(conf, name, overrides)
    without_file = _compose(_without_own_values(conf, relative, tmp_path), name, overrides)
    restated = []
    for path in _leaves(own, prefix):
        before = _lookup(without_file, path)
        if before is not MISSING and before == _lookup(with_file, path):
            restated.append(f"{'.'.join(path)}={before!r}")
    return restated


@pytest.fixture(scope="module", autouse=True)
def registered():
    _register_everything()


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_top_level_config_sets_only_what_its_presets_do_not(name, tmp_path):
    restated = _restated(f"{name}.yaml", name, [], (), tmp_path)
    assert not restated, f"conf/{name}.yaml restates what its presets and schema already give: {restated}"


@pytest.mark.parametrize("group_file", GROUP_FILES)
def test_preset_sets_only_what_differs_from_its_schema(group_file, tmp_path):
    group = group_file.split("/")[0]
    restated = _restated(f"{group_file}.yaml", group_file, [], (group,), tmp_path)
    assert not restated, f"conf/{group_file}.yaml restates its schema's (or inherited preset's) defaults: {restated}"


@functools.cache
def _bare_keys(name: str) -> frozenset[str]:
    return frozenset(_compose(CONF, name, []))


def _contexts(experiment: str) -> list[str]:
    """The top-level configs this experiment composes with: they have every key it sets, and the
    groups it overrides."""
    keys = set(_own_values(CONF, f"experiment/{experiment}.yaml"))
    names = []
    for name in TOP_LEVEL:
        if not keys <= _bare_keys(name):
            continue
        try:
            _compose(CONF, name, [f"+experiment={experiment}"])
        except Exception:  # overrides a group this top-level config does not have
            continue
        names.append(name)
    return names


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_sets_only_what_differs_from_its_composition(experiment, tmp_path):
    contexts = _contexts(experiment)
    assert contexts, f"experiment {experiment} composes with no top-level config"
    for index, name in enumerate(contexts):
        restated = _restated(
            f"experiment/{experiment}.yaml", name, [f"+experiment={experiment}"], (), tmp_path / str(index)
        )
        assert not restated, f"experiment {experiment} restates what conf/{name}.yaml already composes: {restated}"


def test_the_check_catches_a_restated_default(tmp_path):
    """The checks above can fail: a preset restating one schema default (and inheriting another
    preset's value) is reported, its differing value is not."""
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "parallelism" / "restating.yaml").write_text(
        "defaults:\n  - tp2\n  - _self_\ntensor_model_parallel_size: 2\nsequence_parallel: false\nworld_size: 4\n"
    )
    restated = _restated("parallelism/restating.yaml", "parallelism/restating", [], ("parallelism",), tmp_path, conf)
    assert restated == ["parallelism.tensor_model_parallel_size=2", "parallelism.sequence_parallel=False"]
