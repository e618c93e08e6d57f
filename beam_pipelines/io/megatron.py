"""Megatron indexed datasets (`<prefix>.bin` + `<prefix>.idx`): write per-worker shards, merge.

The files are byte for byte what megatron-core's `IndexedDatasetBuilder` writes and what its
`IndexedDataset` (hence `GPTDataset` and `BlendedMegatronDatasetBuilder`) reads; the tests check
both against megatron-core itself. Format (version 1, little-endian):
    .bin   the token ids of every sequence, back to back, in the dataset dtype
    .idx   b"MMIDIDX\\x00\\x00", u64 version = 1, u8 dtype code (uint16 = 8, int32 = 4),
           u64 sequence count S, u64 document-index count D (= documents + 1),
           int32 sequence lengths [S], int64 byte offsets of the sequences in .bin [S],
           int64 document index [D] (0, then the sequence count at the end of each document).
We write one sequence per document (the text's tokens and one end-of-document token), so the
document index is 0..S.

Why our own writer rather than megatron's builder: the builder keeps every length in a Python
list, computes offsets in a Python loop and, when concatenating (`add_index`), loads each
shard's whole index; its memory grows with the dataset. Here a shard keeps 4 bytes per document
(`array('i')`) and is capped by `max_documents_per_shard`, and the merge streams.

Beam side: `WriteIndexedDataset` writes shards from each bundle (no shuffle of token data), then
one worker merges the shard list (a few hundred bytes per shard) into `<prefix>.bin/.idx`.
Cost of the merge: one sequential pass over the shard files - the .bin bytes are copied once
(2 bytes per token for uint16, 4 for int32) and each shard's .idx is read once per section
(12 bytes per document + 8 per document-index entry); memory is one copy buffer. It runs on a
single worker per dataset, so its wall time is total bytes / disk (or object-store) throughput:
e.g. 100 B int32 tokens = 400 GB, about 14 minutes at 500 MB/s. Paths may be local or any Beam
FileSystems URL (gs://, s3://); megatron-core itself reads local (or its object-store) paths.
"""

from __future__ import annotations

import array
import struct
import uuid
from dataclasses import dataclass
from typing import Iterable, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindows

INDEX_HEADER = b"MMIDIDX\x00\x00"
INDEX_VERSION = 1
# megatron.core.datasets.indexed_dataset.DType codes of the dtypes a token dataset can have.
DTYPE_CODES = {"uint8": 1, "int8": 2, "int16": 3, "int32": 4, "int64": 5, "uint16": 8}
_HEADER_SIZE = len(INDEX_HEADER) + 8 + 1 + 8 + 8  # 34 bytes before the arrays
# megatron's `DType.optimal_dtype`: uint16 below 65,500 entries, int32 otherwise (there is no
# uint32 code). We keep its threshold so our files match what its own preprocessing writes.
UINT16_VOCAB_LIMIT = 65500
COPY_CHUNK_BYTES = 16 * 1024 * 1024


def token_dtype(vocab_size: int) -> np.dtype:
    """The .bin dtype for a vocabulary of `vocab_size` ids (uint16 when it fits, else int32)."""
    if vocab_size <= 0:
        raise ValueError(f"vocabulary size must be positive, got {vocab_size}")
    if vocab_size < UINT16_VOCAB_LIMIT:
        return np.dtype(np.uint16)
    if vocab_size <= np.iinfo(np.int32).max:
        return np.dtype(np.int32)
    raise ValueError(f"vocabulary size {vocab_size} does not fit megatron's int32 token ids")


def bin_path(prefix: str) -> str:
    return f"{prefix}.bin"


def idx_path(prefix: str) -> str:
    return f"{prefix}.idx"


def _create(path: str):
    return FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED)


def _open(path: str):
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


@dataclass(frozen=True)
class IndexHeader:
    dtype: np.dtype
    sequence_count: int
    document_index_count: int

    @property
    def lengths_offset(self) -> int:
        return _HEADER_SIZE

    @property
    def pointers_offset(self) -> int:
        return _HEADER_SIZE + 4 * self.sequence_count

    @property
    def document_index_offset(self) -> int:
        return _HEADER_SIZE + 12 * self.sequence_count


def _header_bytes(dtype: np.dtype, sequence_count: int, document_index_count: int) -> bytes:
    code = DTYPE_CODES[np.dtype(dtype).name]
    return INDEX_HEADER + struct.pack("<QBQQ", INDEX_VERSION, code, sequence_count, document_index_count)


def read_index_header(prefix: str) -> IndexHeader:
    with _open(idx_path(prefix)) as handle:
        raw = handle.read(_HEADER_SIZE)
    if len(raw) < _HEADER_SIZE or raw[: len(INDEX_HEADER)] != INDEX_HEADER:
        raise ValueError(f"{idx_path(prefix)} is not a megatron index file")
    version, code, sequences, documents = struct.unpack("<QBQQ", raw[len(INDEX_HEADER) :])
    if version != INDEX_VERSION:
        raise ValueError(f"{idx_path(prefix)}: index version {version}, expected {INDEX_VERSION}")
    names = {value: name for name, value in DTYPE_CODES.items()}
    if code not in names:
        raise ValueError(f"{idx_path(prefix)}: unknown dtype code {code}")
    return IndexHeader(np.dtype(names[code]), sequences, documents)


@dataclass(frozen=True)
class DatasetInfo:
    """What one written dataset (a shard or a merged source) holds. `tokens` counts every id in
    .bin, end-of-document tokens included."""

    prefix: str
    dtype: str
    documents: int
    tokens: int
    first_document_id: str = ""


class IndexedDatasetWriter:
    """Writes one indexed dataset, one document (= one sequence) at a time.

    Memory: 4 bytes per document for the lengths, plus the file buffer; the tokens go straight
    to `.bin`. `close()` writes `.idx` and returns the DatasetInfo.
    """

    def __init__(self, prefix: str, dtype: np.dtype):
        self.prefix = prefix
        self.dtype = np.dtype(dtype)
        if self.dtype.name not in DTYPE_CODES:
            raise ValueError(f"dtype {self.dtype} has no megatron code")
        self._lengths = array.array("i")
        if self._lengths.itemsize != 4:  # pragma: no cover - every platform we run on
            raise RuntimeError("array('i') is not 32-bit here")
        self._tokens = 0
        self._first_document_id = ""
        self._data = _create(bin_path(prefix))

    @property
    def documents(self) -> int:
        return len(self._lengths)

    @property
    def tokens(self) -> int:
        return self._tokens

    def add_document(self, tokens: np.ndarray, document_id: str = "") -> None:
        if tokens.dtype != self.dtype:
            raise TypeError(f"tokens are {tokens.dtype}, dataset is {self.dtype}")
        if not self._lengths:
            self._first_document_id = document_id
        self._data.write(tokens.tobytes(order="C"))
        self._lengths.append(len(tokens))
        self._tokens += len(tokens)

    def close(self) -> DatasetInfo:
        self._data.close()
        lengths = np.frombuffer(self._lengths, dtype=np.int32) if self._lengths else np.zeros(0, np.int32)
        pointers = np.zeros(len(lengths), dtype=np.int64)
        if len(lengths) > 1:
            np.cumsum(lengths[:-1].astype(np.int64) * self.dtype.itemsize, out=pointers[1:])
        document_index = np.arange(len(lengths) + 1, dtype=np.int64)
        with _create(idx_path(self.prefix)) as handle:
            handle.write(_header_bytes(self.dtype, len(lengths), len(document_index)))
            handle.write(lengths.tobytes())
            handle.write(pointers.tobytes())
            handle.write(document_index.tobytes())
        return DatasetInfo(self.prefix, self.dtype.name, len(lengths), self._tokens, self._first_document_id)


def write_indexed_dataset(prefix: str, documents: Iterable[np.ndarray], dtype: np.dtype) -> DatasetInfo:
    writer = IndexedDatasetWriter(prefix, dtype)
    for tokens in documents:
        writer.add_document(np.asarray(tokens, dtype=dtype))
    return writer.close()


def _read_array(handle, offset: int, count: int, dtype, chunk_items: int):
    """Yield `count` items of `dtype` starting at byte `offset`, `chunk_items` at a time."""
    dtype = np.dtype(dtype)
    handle.seek(offset)
    remaining = count
    while remaining:
        take = min(remaining, chunk_items)
        raw = handle.read(take * dtype.itemsize)
        if len(raw) != take * dtype.itemsize:
            raise ValueError("index file is shorter than its header says")
        yield np.frombuffer(raw, dtype=dtype)
        remaining -= take


def merge_indexed_datasets(
    shard_prefixes: Sequence[str], output_prefix: str, dtype: np.dtype, chunk_items: int = 1 << 20
) -> DatasetInfo:
    """Concatenate shards, in the given order, into `output_prefix` (same result as megatron's
    `IndexedDatasetBuilder.add_index` on each shard then `finalize`), streaming.

    Files are written under temporary names and renamed, index last, so a reader never sees a
    half-written dataset under the final name.
    """
    dtype = np.dtype(dtype)
    headers = [read_index_header(prefix) for prefix in shard_prefixes]
    for prefix, header in zip(shard_prefixes, headers):
        if header.dtype != dtype:
            raise ValueError(f"shard {prefix} is {header.dtype}, the dataset is {dtype}")
    sequence_count = sum(h.sequence_count for h in headers)
    document_index_count = 1 + sum(max(h.document_index_count - 1, 0) for h in headers)
    partial = f"{output_prefix}.partial-{uuid.uuid4().hex[:8]}"

    shard_tokens = []
    with _create(idx_path(partial)) as out:
        out.write(_header_bytes(dtype, sequence_count, document_index_count))
        for prefix, header in zip(shard_prefixes, headers):
            tokens = 0
            with _open(idx_path(prefix)) as handle:
                for lengths in _read_array(handle, header.lengths_offset, header.sequence_count, np.int32, chunk_items):
                    tokens += int(lengths.sum(dtype=np.int64))
                    out.write(lengths.tobytes())
            shard_tokens.append(tokens)
        byte_offset = 0
        for prefix, header, tokens in zip(shard_prefixes, headers, shard_tokens):
            with _open(idx_path(prefix)) as handle:
                for pointers in _read_array(
                    handle, header.pointers_offset, header.sequence_count, np.int64, chunk_items
                ):
                    out.write((pointers + byte_offset).tobytes())
            byte_offset += tokens * dtype.itemsize
        out.write(np.zeros(1, dtype=np.int64).tobytes())
        sequence_offset = 0
        for prefix, header in zip(shard_prefixes, headers):
            with _open(idx_path(prefix)) as handle:
                # Skip the shard's leading 0: the previous shard's last entry already marks it.
                entries = _read_array(
                    handle,
                    header.document_index_offset + 8,
                    max(header.document_index_count - 1, 0),
                    np.int64,
                    chunk_items,
                )
                for document_index in entries:
                    out.write((document_index + sequence_offset).tobytes())
            sequence_offset += header.sequence_count

    with _create(bin_path(partial)) as out:
        for prefix, tokens in zip(shard_prefixes, shard_tokens):
            expected = tokens * dtype.itemsize
            copied = 0
            with _open(bin_path(prefix)) as handle:
                while True:
                    chunk = handle.read(COPY_CHUNK_BYTES)
                    if not chunk:
                        break
                    out.write(chunk)
                    copied += len(chunk)
            if copied != expected:
                raise ValueError(f"shard {bin_path(prefix)} has {copied} bytes, its index says {expected}")

    for final in (bin_path(output_prefix), idx_path(output_prefix)):
        if FileSystems.exists(final):
            FileSystems.delete([final])
    FileSystems.rename([bin_path(partial)], [bin_path(output_prefix)])
    FileSystems.rename([idx_path(partial)], [idx_path(output_prefix)])
    return DatasetInfo(output_prefix, dtype.name, sequence_count, sum(shard_tokens))


def delete_dataset(prefix: str) -> None:
    existing = [path for path in (bin_path(prefix), idx_path(prefix)) if FileSystems.exists(path)]
    if existing:
        FileSystems.delete(existing)


# ----------------------------------------------------------------------------------------------
# Beam: per-bundle shards, then one merge per dataset


@dataclass(slots=True)
class EncodedDocument:
    """One tokenized document on its way to the sink: its id and its token ids (EOD included)."""

    id: str
    tokens: np.ndarray


class WriteShardsDoFn(beam.DoFn):
    """EncodedDocument -> shards `<shards_dir>/<uuid>.bin/.idx`; emits one DatasetInfo per shard
    when it is complete (at the end of a bundle, or every `max_documents_per_shard` documents).

    A retried bundle leaves its partial shard behind under an unused name; only shards whose
    DatasetInfo was emitted by a committed bundle are merged, and the merge then removes the
    whole shard directory.
    """

    def __init__(self, shards_dir: str, dtype_name: str, max_documents_per_shard: int, log_name: str = "tokenize"):
        self.shards_dir = shards_dir.rstrip("/")
        self.dtype_name = dtype_name
        self.max_documents_per_shard = max_documents_per_shard
        self.log_name = log_name
        self._writer: IndexedDatasetWriter | None = None

    def start_bundle(self):
        self._writer = None

    def _close(self) -> DatasetInfo:
        info = self._writer.close()
        self._writer = None
        shard = info.prefix.rsplit("/", 1)[-1]
        # Runs in Beam's worker processes, whose logging Beam's worker harness sets up (its own
        # format, on stderr, or relayed to the runner): the progress line goes to stdout as is.
        print(f"[{self.log_name}] shard {shard}: {info.documents} documents, {info.tokens} tokens", flush=True)
        return info

    def process(self, document: EncodedDocument):
        if self._writer is None:
            prefix = f"{self.shards_dir}/{uuid.uuid4().hex}"
            self._writer = IndexedDatasetWriter(prefix, np.dtype(self.dtype_name))
        self._writer.add_document(document.tokens, document.id)
        if self._writer.documents >= self.max_documents_per_shard:
            yield self._close()

    def finish_bundle(self):
        if self._writer is not None:
            yield GlobalWindows.windowed_value(self._close())


def merge_shards(
    shards: list[DatasetInfo], output_prefix: str, dtype_name: str, shards_dir: str, keep_shards: bool = False
) -> dict:
    """Merge the committed shards of one dataset and describe the result (JSON-ready).

    Shards are ordered by their first document id, so a rerun over the same bundles writes the
    same bytes.
    """
    ordered = sorted(shards, key=lambda info: (info.first_document_id, info.prefix))
    merged = merge_indexed_datasets([info.prefix for info in ordered], output_prefix, np.dtype(dtype_name))
    if not keep_shards and FileSystems.exists(shards_dir):
        FileSystems.delete([shards_dir])
    return {
        "prefix": merged.prefix,
        "dtype": merged.dtype,
        "documents": merged.documents,
        "tokens": merged.tokens,
        "shards": [
            {"shard": info.prefix.rsplit("/", 1)[-1], "documents": info.documents, "tokens": info.tokens}
            for info in ordered
        ],
    }


class WriteIndexedDataset(beam.PTransform):
    """EncodedDocuments -> `<output_prefix>.bin/.idx`. Output: one element, the merge
    description (`merge_shards`), or none when the input is empty (then nothing is written)."""

    def __init__(
        self,
        output_prefix: str,
        shards_dir: str,
        dtype_name: str,
        max_documents_per_shard: int,
        keep_shards: bool = False,
        log_name: str = "tokenize",
    ):
        super().__init__()
        self.output_prefix = output_prefix
        self.shards_dir = shards_dir
        self.dtype_name = dtype_name
        self.max_documents_per_shard = max_documents_per_shard
        self.keep_shards = keep_shards
        self.log_name = log_name  # not `label`: that is the PTransform's own name

    def expand(self, documents):
        output_prefix, shards_dir, dtype_name, keep = (
            self.output_prefix,
            self.shards_dir,
            self.dtype_name,
            self.keep_shards,
        )
        return (
            documents
            | "Write shards"
            >> beam.ParDo(WriteShardsDoFn(shards_dir, dtype_name, self.max_documents_per_shard, self.log_name))
            | "Key shards" >> beam.Map(lambda info: (output_prefix, info))
            # One key and a few hundred bytes per shard: the shard list moves, not the tokens.
            | "Collect shards" >> beam.GroupByKey()
            | "Merge shards"
            >> beam.MapTuple(lambda _, infos: merge_shards(list(infos), output_prefix, dtype_name, shards_dir, keep))
        )
