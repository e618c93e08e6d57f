"""Every command of the README's "The chain at real scale" section composes and dry-runs.

The commands are read from README.md itself, so a command edited there is the command tested.
Paths are moved under a temporary directory (`/data/...`, `/ckpt/...`, `outputs/...`), where the
test puts what the commands read before anything runs: a tiny Hugging Face LLaMA with its own
tokenizer at the DeepSeek-Coder checkpoint's place (8 heads, so the 7B presets' TP=8 layout fits),
the DeepSeekMath-Base mixture's five sources tokenized with that tokenizer, SFT and GSM8K files.
Corpus commands (launch/beam/dataflow.sh) print their composed config (`--cfg job`), training
commands (launch/slurm/submit.sh) run `--dry-run` (compose, validate the layout against the
job's ranks, check data and tokenizer, print the sbatch command), the export `--cfg job`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.megatron_recipes.convert.tiny_models import GQA_UNTIED
from tests.megatron_recipes.data.model_with_tokenizer import (
    copy_source,
    tokenize_source,
    write_checkpoint_with_tokenizer,
    write_text_source,
)
from tests.support import REPO_ROOT, subprocess_env

SECTION = "## The chain at real scale"
# Eight query and key/value heads: the 7B presets' tensor parallelism of 8 divides them.
# and the presets' 4K context (rotary positions: no parameters for it).
EIGHT_HEADS = {**GQA_UNTIED, "num_attention_heads": 8, "num_key_value_heads": 8, "max_position_embeddings": 4096}
MIXTURE = ("math_corpus", "algebraic_stack", "arxiv", "github_code", "common_crawl")
GSM8K_RECORD = {
    "question": "Tom has 3 apples and buys 4 more. How many apples does he have?",
    "answer": "3 + 4 = 7\n#### 7",
}


def readme_commands() -> tuple[dict[str, str], list[str]]:
    """(variables the block exports or sets, the commands) of the section's bash block."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    variables, commands = {}, []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if words[0] == "export":
            variables.update(word.split("=", 1) for word in words[1:])
        elif len(words) == 1 and re.fullmatch(r"[A-Z_]+=\S+", words[0]):
            variables.update([words[0].split("=", 1)])
        else:
            commands.append(line)
    return variables, commands


VARIABLES, COMMANDS = readme_commands()


def command_name(line: str) -> str:
    words = [word for word in shlex.split(line, comments=True) if "=" not in word]
    return "-".join(Path(word).stem for word in words[:2])


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """The files the commands read, under a temporary root."""
    root = tmp_path_factory.mktemp("real-scale")
    checkpoint = write_checkpoint_with_tokenizer(root / "ckpt" / "deepseek-coder-v1.5-7b-base", EIGHT_HEADS)
    work = root / "data" / "dsm"
    texts = write_text_source(root / "texts.jsonl")
    tokenize_source(work, MIXTURE[0], texts, str(checkpoint))
    for name in MIXTURE[1:]:
        copy_source(work, MIXTURE[0], name)
    (root / "data" / "sft").mkdir(parents=True)
    sft = {"messages": [{"role": "user", "content": "2 + 2?"}, {"role": "assistant", "content": "4"}]}
    (root / "data" / "sft" / "part-0.jsonl").write_text(json.dumps(sft) + "\n")
    (root / "data" / "gsm8k").mkdir(parents=True)
    for split in ("train", "test"):
        (root / "data" / "gsm8k" / f"{split}.jsonl").write_text(json.dumps(GSM8K_RECORD) + "\n")
    # The export reads the GRPO run's checkpoints; the directory stands for that run's output.
    (root / "outputs" / "grpo" / "deepseekmath_rl_7b" / "checkpoints").mkdir(parents=True)
    return root


def moved(line: str, root: Path) -> str:
    line = re.sub(r"(?<![\w/])/(data|ckpt)/", lambda m: f"{root}/{m.group(1)}/", line)
    return re.sub(r"(?<=[=\s])outputs/", f"{root}/outputs/", line)


def run_command(line: str, root: Path) -> subprocess.CompletedProcess:
    words = shlex.split(moved(line, root), comments=True)
    env = subprocess_env(PYTHON=sys.executable, LOG_ROOT=str(root / "logs"), **VARIABLES)
    while re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    for name, value in VARIABLES.items():  # $W and the like
        words = [word.replace(f"${name}", value) for word in words]
    program = words[0]
    if program.startswith("launch/beam/"):
        command = ["bash", program, *words[1:], "--cfg", "job"]
    elif program == "launch/slurm/submit.sh":
        command = ["bash", program, words[1], "--dry-run", *words[2:]]
    elif program == "python":
        command = [sys.executable, *words[1:], "--cfg", "job"]
    else:
        raise AssertionError(f"the test does not know how to dry-run: {line}")
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_the_section_is_read():
    programs = [shlex.split(line, comments=True) for line in COMMANDS]
    names = [" ".join(word for word in words if "=" not in word)[:60] for words in programs]
    assert len(COMMANDS) == 11, names
    assert {"GCP_PROJECT", "GCP_REGION", "GCS_BUCKET", "W"} <= set(VARIABLES)


@pytest.mark.parametrize("index", range(len(COMMANDS)), ids=[f"{i}-{command_name(c)}" for i, c in enumerate(COMMANDS)])
def test_every_real_scale_command_composes_and_dry_runs(place, index):
    line = COMMANDS[index]
    result = run_command(line, place)
    assert result.returncode == 0, f"{line}\n{result.stderr[-3000:]}"
    if "launch/slurm/submit.sh" in line:
        assert "submit: sbatch" in result.stdout, result.stdout[-2000:]
    else:
        assert result.stdout.strip(), result.stderr[-2000:]


def test_each_stage_starts_from_where_an_earlier_stage_writes():
    """checkpoint.init_from, generator.checkpoint and megatron_dir name an earlier command's
    trainer.output_dir (from its experiment preset), so the chain's stages connect."""
    written: list[str] = []
    for line in COMMANDS:
        words = shlex.split(line, comments=True)
        for word in words:
            key, _, value = word.partition("=")
            if key in ("checkpoint.init_from", "generator.checkpoint", "megatron_dir"):
                assert any(value.startswith(directory) for directory in written), (word, written)
        for word in words:
            if word.startswith("+experiment="):
                preset = yaml.safe_load((REPO_ROOT / "conf" / "experiment" / f"{word.split('=')[1]}.yaml").read_text())
                if "output_dir" in preset.get("trainer", {}):
                    written.append(preset["trainer"]["output_dir"])
    assert len(written) == 3


def test_the_7b_pretraining_command_uses_the_checkpoint_tokenizer_and_checks_the_data(place):
    """The dry run of the 7B pretraining command fails, in one line, on a mixture source tokenized
    with the default DeepSeek tokenizer instead of the checkpoint's."""
    (line,) = [line for line in COMMANDS if "submit.sh pretrain" in line]
    work = place / "data" / "dsm"
    tokenize_source(work, "github_code", write_text_source(place / "code.jsonl"))  # the default tokenizer
    try:
        result = run_command(line, place)
        assert result.returncode == 2
        last = [row for row in result.stderr.splitlines() if row.strip()][-1]
        assert last.startswith("error: data source github_code:") and "was tokenized with" in last, last
    finally:
        for suffix in (".bin", ".idx"):
            os.remove(work / "tokenized" / f"github_code{suffix}")
        shutil.rmtree(work / "tokenized" / "github_code")
        copy_source(work, MIXTURE[0], "github_code")
