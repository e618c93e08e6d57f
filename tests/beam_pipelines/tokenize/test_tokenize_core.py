"""The pure parts of tokenization with the real DeepSeek tokenizer: what happens to each kind of
document, the EOD choice, and how records of other sources become documents."""

from __future__ import annotations

import gzip
import json
import shutil

import numpy as np
import pytest

from beam_pipelines.accounting import DeadLetter, Drop
from beam_pipelines.document import Document
from beam_pipelines.io.config import TextSourceConfig
from beam_pipelines.io.megatron import EncodedDocument
from beam_pipelines.io.text_sources import (
    count_source_records,
    document_from_record,
    iter_source_texts,
    parse_json_line,
)
from beam_pipelines.transforms.tokenize import (
    embedded_tokenizer_file,
    encode_documents,
    load_tokenizer,
    resolve_eod,
)
from stack_common.errors import ConfigError
from tests.beam_pipelines.tokenize.tokenize_inputs import EOD_TEXT, stdlib_sources

DEEPSEEK_EOD_ID = 1


@pytest.fixture(scope="module")
def deepseek():
    return load_tokenizer("")


def test_default_tokenizer_is_deepseek_with_eod_id_1(deepseek):
    assert deepseek.get_vocab_size(with_added_tokens=True) == 129280
    assert resolve_eod(deepseek, "") == (EOD_TEXT, DEEPSEEK_EOD_ID)


def test_every_document_ends_with_one_eod_and_decodes_to_its_text(deepseek):
    texts = [text for _, text in stdlib_sources(8)] + [
        f"Quoting {EOD_TEXT} and <｜begin▁of▁sentence｜> in a page.",
        "Math: $\\int_0^1 x^2\\,dx = \\frac{1}{3}$, 12345679 × 9 = 111111111; 日本語 ü\u00a0\t\r\n trailing  ",
    ]
    documents = [Document(id=str(i), text=t) for i, t in enumerate(texts)]
    outcomes = encode_documents(deepseek, documents, DEEPSEEK_EOD_ID, np.dtype(np.int32), 10_000_000)
    for text, outcome in zip(texts, outcomes):
        assert isinstance(outcome, EncodedDocument)
        assert outcome.tokens.dtype == np.int32
        assert outcome.tokens[-1] == DEEPSEEK_EOD_ID
        assert DEEPSEEK_EOD_ID not in outcome.tokens[:-1], "an EOD string in the text stays text"
        assert 0 not in outcome.tokens, "no BOS"
        assert deepseek.decode(outcome.tokens[:-1].tolist(), skip_special_tokens=False) == text


def test_empty_long_and_unencodable_documents_do_not_spoil_the_batch(deepseek):
    documents = [
        Document(id="good1", text="First good document."),
        Document(id="empty", text=""),
        Document(id="blank", text=" \n\t "),
        Document(id="long", text="x" * 101),
        Document(id="surrogate", text="a lone surrogate \ud800 here"),
        Document(id="good2", text="Second good document."),
    ]
    outcomes = encode_documents(deepseek, documents, DEEPSEEK_EOD_ID, np.dtype(np.int32), max_characters=100)
    kinds = [type(o).__name__ for o in outcomes]
    assert kinds == ["EncodedDocument", "Drop", "Drop", "Drop", "DeadLetter", "EncodedDocument"]
    assert [o.reason for o in outcomes if isinstance(o, Drop)] == ["empty_text", "empty_text", "too_long"]
    dead = outcomes[4]
    assert isinstance(dead, DeadLetter) and dead.kind == "encode_error" and dead.record_id == "surrogate"
    json.dumps(json.loads(dead.to_json()))  # writable as a JSON line despite the surrogate
    assert dead.to_json().encode("utf-8")
    single = encode_documents(deepseek, [documents[5]], DEEPSEEK_EOD_ID, np.dtype(np.int32), 100)[0]
    assert np.array_equal(single.tokens, outcomes[5].tokens)


def test_eod_resolution_rules(tmp_path, deepseek):
    # A directory: tokenizer.json inside, eos_token from the tokenizer_config.json beside it.
    directory = tmp_path / "tok"
    directory.mkdir()
    shutil.copy(embedded_tokenizer_file(), directory / "tokenizer.json")
    (directory / "tokenizer_config.json").write_text(json.dumps({"eos_token": {"content": "<｜▁pad▁｜>"}}))
    loaded = load_tokenizer(str(directory))
    assert resolve_eod(loaded, str(directory)) == ("<｜▁pad▁｜>", 2)
    assert resolve_eod(loaded, str(directory), "<｜begin▁of▁sentence｜>") == ("<｜begin▁of▁sentence｜>", 0)
    with pytest.raises(ConfigError, match="tokenizer.eod_token='<nope>'"):
        resolve_eod(loaded, str(directory), "<nope>")
    # No config file: the known end-of-text tokens are tried.
    (directory / "tokenizer_config.json").unlink()
    assert resolve_eod(loaded, str(directory / "tokenizer.json")) == (EOD_TEXT, DEEPSEEK_EOD_ID)
    with pytest.raises(ConfigError, match="not found"):
        load_tokenizer(str(tmp_path / "missing"))
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot be loaded"):
        load_tokenizer(str(tmp_path / "broken.json"))


def test_records_become_documents_or_dead_letters():
    ok = document_from_record({"content": "text", "hexsha": "abc"}, "content", "hexsha", "code", "f.parquet", "row1")
    assert isinstance(ok, Document) and (ok.id, ok.text, ok.source) == ("abc", "text", "code")
    no_id = document_from_record({"content": "text"}, "content", "hexsha", "code", "f", "row1")
    assert no_id.id == document_from_record({"content": "text"}, "content", "hexsha", "code", "f", "row1").id
    assert no_id.id != document_from_record({"content": "text"}, "content", "hexsha", "code", "f", "row2").id
    for record, kind in [
        ({"other": 1}, "missing_text"),
        ({"content": None}, "missing_text"),
        ({"content": 3}, "text_not_a_string"),
    ]:
        outcome = document_from_record(record, "content", "", "code", "f", "k")
        assert isinstance(outcome, DeadLetter) and outcome.kind == kind
    assert parse_json_line(b"[1]", "text", "id", "s", "f").kind == "not_an_object"
    assert parse_json_line(b"{oops", "text", "id", "s", "f").kind == "bad_json"
    assert parse_json_line(b'{"text": "caf\xe9"}', "text", "id", "s", "f").kind == "bad_json"
    assert parse_json_line('{"text": "café", "id": 7}'.encode(), "text", "id", "s", "f").id == "7"


def test_input_record_count_follows_the_reader_and_its_size_limit(tmp_path):
    # Blank lines (also "\r\n" ones) are not records; a last line without "\n" is one.
    body = b'{"text": "a"}\n\n{"text": "b"}\r\n  \r\nnot json\n{"text": "c"}'
    (tmp_path / "part-0.jsonl").write_bytes(body)
    with gzip.open(tmp_path / "part-1.jsonl.gz", "wb") as handle:
        handle.write(b'{"text": "d"}\n{"text": "e"}\n')
    source = TextSourceConfig(name="s", format="jsonl", input=str(tmp_path / "part-*"))
    assert count_source_records(source, 1 << 20) == 4 + 2
    # Too large to read twice in the launching process (or the check turned off): not counted.
    assert count_source_records(source, 10) is None
    assert count_source_records(source, 0) is None
    # The same line reader serves tokenizer training, compressed files included.
    assert list(iter_source_texts(source)) == ["a", "b", "c", "d", "e"]
