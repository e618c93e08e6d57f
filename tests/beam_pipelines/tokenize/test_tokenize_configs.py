"""Every tokenize / train_tokenizer composition composes, and bad settings fail in one line before
any pipeline work."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipelines.config import TokenizeConfig, TrainTokenizerConfig, register_configs
from beam_pipelines.io.config import TextSourceConfig
from beam_pipelines.io.text_sources import check_source
from stack_common.cli import compose_config
from stack_common.errors import ConfigError
from tests.support import REPO_ROOT

SOURCE_PRESETS = sorted(p.stem for p in (REPO_ROOT / "conf" / "source").glob("*.yaml"))
BEAM_PRESETS = sorted(p.stem for p in (REPO_ROOT / "conf" / "beam").glob("*.yaml"))
CORPUS_PRESETS = sorted(p.stem for p in (REPO_ROOT / "conf" / "corpus").glob("*.yaml"))
BEAM_REQUIRED = {
    "dataflow": ["beam.project=p", "beam.region=r", "beam.temp_location=gs://b/tmp"],
    "flink": ["beam.flink_master=jm:8081"],
    "spark": ["beam.spark_master_url=spark://m:7077"],
}


def source_overrides(preset: str) -> list[str]:
    return [f"source={preset}"] + ([] if preset == "math_corpus" else ["source.input=/data/x/*.jsonl.zst"])


@pytest.mark.parametrize("source", SOURCE_PRESETS)
@pytest.mark.parametrize("corpus", CORPUS_PRESETS)
def test_every_tokenize_composition(source, corpus):
    config = compose_config("tokenize", [f"corpus={corpus}", *source_overrides(source)], register_configs)
    assert isinstance(config, TokenizeConfig) and config.source.name == source
    assert config.output_dir == f"{config.corpus.work_dir}/tokenized"
    if source == "math_corpus":
        assert config.source.format == "documents" and config.source.input == f"{config.corpus.work_dir}/corpus"


@pytest.mark.parametrize("beam", BEAM_PRESETS)
def test_tokenize_composes_with_every_runner(beam):
    config = compose_config("tokenize", [f"beam={beam}", *BEAM_REQUIRED.get(beam, [])], register_configs)
    assert config.beam.runner == beam.split("_")[0]


@pytest.mark.parametrize("source", SOURCE_PRESETS)
def test_every_train_tokenizer_composition(source):
    config = compose_config("train_tokenizer", source_overrides(source), register_configs)
    assert isinstance(config, TrainTokenizerConfig) and config.output_dir == f"{config.corpus.work_dir}/tokenizer"


@pytest.mark.parametrize(
    "name, overrides, message",
    [
        ("tokenize", ["source=github_code"], "source.input is required for source 'github_code'"),
        ("tokenize", ["source.format=csv"], "source.format='csv' is not one of"),
        ("tokenize", ["source.name=../escape"], "source.name='../escape' must be a file name"),
        ("tokenize", ["batch_documents=0"], "batch_documents=0 must be positive"),
        ("tokenize", ["source.text_field="], "source.text_field is empty"),
        ("tokenize", ["tokenizer.no_such_key=1"], "no_such_key"),
        ("train_tokenizer", ["vocab_size=100"], "vocab_size=100 must be >= 258"),
    ],
)
def test_bad_settings_fail_in_one_line(name, overrides, message):
    with pytest.raises(ConfigError) as error:
        compose_config(name, overrides, register_configs)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_inputs_are_checked_before_the_pipeline(tmp_path):
    with pytest.raises(ConfigError, match="no files match"):
        check_source(TextSourceConfig(input=str(tmp_path / "missing")))
    with pytest.raises(ConfigError, match="matches no file"):
        check_source(TextSourceConfig(name="x", format="jsonl", input=str(tmp_path / "*.jsonl")))
    pq.write_table(pa.table({"content": ["a"], "hexsha": ["1"]}), tmp_path / "code.parquet")
    check_source(
        TextSourceConfig(
            name="code", format="parquet", input=str(tmp_path / "*.parquet"), text_field="content", id_field="hexsha"
        )
    )
    with pytest.raises(ConfigError, match="source.text_field='text' is not a column"):
        check_source(TextSourceConfig(name="code", format="parquet", input=str(tmp_path / "*.parquet")))
