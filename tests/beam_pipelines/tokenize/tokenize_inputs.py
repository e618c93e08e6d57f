"""Real inputs for the tokenization tests: standard-library Python files as a JSONL code source
with the bad records a real dump has, and a helper that runs tokenize with overrides."""

from __future__ import annotations

import glob
import gzip
import json
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from beam_pipelines.config import register_configs
from beam_pipelines.stages.tokenize import run_tokenize
from stack_common.cli import compose_config

EOD_TEXT = "<｜end▁of▁sentence｜>"

# Records a real dump has besides good ones, and where each must end up.
BAD_LINES = [
    (json.dumps({"path": "quotes/eod.txt", "content": f"A page that quotes {EOD_TEXT} inside its text.\n"}), "kept"),
    (json.dumps({"content": "A record without an id field: its id is a hash of file and line.\n"}), "kept"),
    ("", "blank"),
    (json.dumps({"path": "empty.txt", "content": ""}), "dropped:empty_text"),
    (json.dumps({"path": "spaces.txt", "content": "   \n\t  "}), "dropped:empty_text"),
    (json.dumps({"path": "no_content.txt"}), "dead:missing_text"),
    (
        '{"path": "surrogate.txt", "content": "text with a lone surrogate \\ud800 from a JSON escape"}',
        "dead:encode_error",
    ),
    ("this is not JSON at all", "dead:bad_json"),
    ("[1, 2, 3]", "dead:not_an_object"),
    (json.dumps({"path": "number.txt", "content": 42}), "dead:text_not_a_string"),
]
INVALID_UTF8_LINE = b'{"path": "latin1.txt", "content": "caf\xe9"}'  # dead:bad_json


def stdlib_sources(count: int = 30) -> list[tuple[str, str]]:
    """(path, text) of real Python files of the standard library, 2-30 KB each."""
    stdlib = sysconfig.get_paths()["stdlib"]
    found = []
    for path in sorted(glob.glob(os.path.join(stdlib, "*.py"))):
        size = os.path.getsize(path)
        if 2_000 <= size <= 30_000:
            found.append((os.path.relpath(path, stdlib), Path(path).read_text(encoding="utf-8")))
        if len(found) == count:
            break
    assert len(found) == count, f"only {len(found)} stdlib files found under {stdlib}"
    return found


@dataclass
class CodeSource:
    path: Path
    texts: list[str]  # texts that must come out tokenized (good files + the kept bad-line records)
    expected_in: int
    expected_dropped: dict
    expected_dead: dict


def write_code_jsonl(path: Path) -> CodeSource:
    files = stdlib_sources()
    texts = [text for _, text in files]
    lines = [json.dumps({"path": name, "content": text}).encode() for name, text in files]
    dropped: dict = {}
    dead: dict = {"bad_json": 1}
    for line, fate in BAD_LINES:
        lines.append(line.encode())
        if fate == "kept":
            texts.append(json.loads(line)["content"])
        elif fate.startswith("dropped:"):
            dropped[fate.split(":")[1]] = dropped.get(fate.split(":")[1], 0) + 1
        elif fate.startswith("dead:"):
            dead[fate.split(":")[1]] = dead.get(fate.split(":")[1], 0) + 1
    lines.append(INVALID_UTF8_LINE)
    with gzip.open(path, "wb") as handle:
        handle.write(b"\n".join(lines) + b"\n")
    counted = sum(1 for line, fate in BAD_LINES if fate != "blank") + len(files) + 1
    return CodeSource(path, texts, counted, dropped, dead)


def tokenize(work_dir: Path, *overrides: str) -> tuple[object, dict]:
    config = compose_config("tokenize", [f"corpus.work_dir={work_dir}", *overrides], register_configs)
    return config, run_tokenize(config)
