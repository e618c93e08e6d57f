"""MinHash LSH near-duplicate detection as a dataflow (step 07_minhash).

Pure core (testable without Beam):
- `word_tokens(text)`: NFKC, lower case, tokens = runs of letters, runs of digits, and single
  CJK characters (Chinese has no spaces; one character per token keeps shingles meaningful).
  Decontamination tokenises the same way.
- `Signer.sign(text)`: word `shingle_size`-grams hashed once with xxh32 (`shingle_hashes`),
  then datasketch's `affine32` permutations (MurmurHash3 finaliser, a * x + b mod 2**32,
  minimum) applied to the whole hash array in numpy: exactly datasketch's `update_batch`
  values (tests check), ~2x faster than calling it. The permutation scheme is pinned to
  `affine32` (`PERMUTATION_SCHEME`): datasketch 2.0 changed its default and signatures of two
  schemes compare as garbage. The scheme is a constant, not a setting; it is recorded with
  seed and num_perm in every run's summary, and signatures never outlive the run that made
  them, so two schemes cannot meet.
- `Signer.signatures(hash arrays)`: the same values for a batch of documents in a few numpy
  operations (chunks of 16k hashes, `minimum.reduceat`).
- `band_hashes(signatures)`: `bands` uint64 keys per document (band index and the band's `rows`
  values mixed in numpy); two documents collide in a band with probability s**rows at Jaccard
  s, so they become candidates with probability 1 - (1 - s**rows)**bands
  (`candidate_probability`).
- `jaccard(a, b)`: exact Jaccard of two sorted shingle-hash arrays (verification).

Beam graph (the unit of work is an input Parquet file, not a document; `stages/dedup.py`):
- `SignUnits`: per input file, its documents' signatures and band keys in batches; writes the
  signed documents (id, rank, shingle hashes), the band records (key, id, file) split by key
  into P partitions, and every id split by id into P partitions. No per-document element
  enters the runner, so no shuffle of N records.
- `CandidateEdges`: once every file is signed, one task per partition reads its band records,
  sorts the keys in numpy and turns every run of two or more equal keys (a shared bucket)
  into candidate edges: every pair for buckets of up to `pairwise_bucket_limit` documents
  (a star would only verify members against the centre), a star on the smallest id above
  (edges stay O(bucket)); without verification always a star (connects the bucket as all
  pairs would). Distinct edges carry their endpoints' files.
- `VerifyEdges`: edges split by a hash of the pair into verification partitions (as many as
  band partitions); each endpoint's id goes to its file's task, which reads its signed documents
  once and writes the requested shingle hashes to one small file per partition; then one task
  per partition reads its files and keeps the edges whose exact Jaccard reaches `threshold`.
  Only ids travel through the runner; the hashes go through files.
- connected components of the kept edges (`connected_components.py`, large-star / small-star
  rounds); `SelectSurvivors` picks one survivor per component (losers keyed by their file);
  `DuplicateIds` finds repeated ids per id partition; `ApplyRemovals` filters each input file
  where it lies (an Arrow filter) and writes its kept rows as one Parquet file; only losers,
  duplicate copies and failures travel.

Cost model (N documents, average length L words, P = num_perm, B = bands, F input files,
Q = band partitions = ceil(N * B / `band_partition_records`), E candidate edges):
- signatures: O(N * L * P) CPU, embarrassingly parallel over files; memory one file;
- banding: N * B records of ~20 bytes written to Q * F files, one partition (at most
  `band_partition_records` records, ~60 bytes each in memory) sorted per task;
- verification: 3 E small records (ids, units, partition) through the runner; the endpoints'
  shingle hashes (~1.2 KB a ~2 KB document) written once per (file, partition) that needs them,
  one partition's (~E / Q edges') read by one task;
- edges, components, survivors: proportional to E and the candidate documents, never to N;
- removal: one file per task; losers, duplicate copies and failures through the runner.
So per-task memory is set by the configuration (file size, `band_partition_records`, which also
sets the verification partitions), and what the runner shuffles is ids proportional to the
candidates, not documents or hashes. The direct runner holds every shuffle in its driver's
memory (decoded, then encoded again), so its driver still grows with E: measured (2 workers,
`benchmarks/dedup_memory.py` attributes RSS to stages) 357 MB at 100k documents (E = 31,502)
and 444 MB at 300k (E = 96,495), ~1.3 KB per candidate edge; the workers' sum stays at
1.0-1.2 GB (one input file, one band partition each). Before, the verification join carried one
shingle-hash array per candidate edge through that memory (driver 533 MB at 100k, summed peak
4.5 GB at 1M); before per-file signing the runner held N * B band records, N shingle arrays and
all N documents (16.4 GB at 1M).

Measured: see `benchmarks/dedup_scale.py` (docstring and `benchmarks/results/dedup_scale_*.json`).
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from datasketch import MinHash

from beam_pipelines.accounting import DEAD_LETTER, REMOVED, DeadLetter, StepCounters
from beam_pipelines.document import DOCUMENT_SCHEMA, Document, documents_to_table, removed_row

MINHASH_STEP = "07_minhash"
PERMUTATION_SCHEME = "affine32"
NEAR_DUPLICATE_REASON = "near_duplicate"

# CJK ideographs, kana and hangul: one token per character.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_TOKEN = re.compile(rf"[{_CJK}]|\d+|[^\W\d_{_CJK}]+")


def word_tokens(text: str) -> list[str]:
    """Normalised word tokens: case, Unicode compatibility forms, punctuation and whitespace
    do not matter; letters and digits split apart (`2x` -> `2`, `x`), CJK per character."""
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).lower())


def shingles(tokens: Sequence[str], shingle_size: int) -> set[bytes]:
    """Distinct word `shingle_size`-grams as UTF-8 bytes (the readable reference of
    `shingle_hashes`). A text shorter than one shingle is one shingle (its whole token
    sequence), so short documents still dedup exactly."""
    if not tokens:
        return set()
    if len(tokens) <= shingle_size:
        return {" ".join(tokens).encode("utf-8", "surrogatepass")}
    return {
        " ".join(tokens[i : i + shingle_size]).encode("utf-8", "surrogatepass")
        for i in range(len(tokens) - shingle_size + 1)
    }


def shingle_hashes(tokens: Sequence[str], shingle_size: int) -> np.ndarray:
    """Sorted distinct xxh32 hashes of `shingles(tokens, shingle_size)`, computed by slicing one
    encoded string instead of joining every window (~1.3x faster; tests check they agree)."""
    if not tokens:
        return np.zeros(0, dtype=np.uint32)
    joined = " ".join(tokens).encode("utf-8", "surrogatepass")
    if len(tokens) <= shingle_size:
        return np.array([xxhash.xxh32_intdigest(joined)], dtype=np.uint32)
    starts = [0]
    for token in tokens:
        starts.append(starts[-1] + (len(token) if token.isascii() else len(token.encode("utf-8", "surrogatepass"))) + 1)
    digest = xxhash.xxh32_intdigest
    hashed = np.array(
        [digest(joined[start : end - 1]) for start, end in zip(starts, starts[shingle_size:])], dtype=np.uint32
    )
    return sorted_distinct(hashed)


def sorted_distinct(values: np.ndarray) -> np.ndarray:
    """`np.unique` for a 1-D array by sort and neighbour compare (numpy 2's hash-based unique is
    ~5x slower on a few hundred uint32 values)."""
    values.sort()
    if values.size < 2:
        return values
    keep = np.empty(values.size, dtype=bool)
    keep[0] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def jaccard(first: np.ndarray, second: np.ndarray) -> float:
    """Exact Jaccard of two sorted distinct arrays."""
    if first.size == 0 and second.size == 0:
        return 1.0
    common = np.intersect1d(first, second, assume_unique=True).size
    return common / (first.size + second.size - common)


def candidate_probability(similarity: float, bands: int, rows: int) -> float:
    """Probability that two documents of Jaccard `similarity` share at least one band."""
    return 1.0 - (1.0 - similarity**rows) ** bands


def lsh_threshold(bands: int, rows: int) -> float:
    """Similarity at which the banding S-curve is steepest, ~ (1/bands)**(1/rows)."""
    return (1.0 / bands) ** (1.0 / rows)


@dataclass(frozen=True)
class MinHashSettings:
    """What a signature depends on; two runs' signatures are comparable iff these are equal.
    (Defaults live in transforms/config.py MinHashConfig; `from_config` copies them.)"""

    num_perm: int
    bands: int
    rows: int
    seed: int
    shingle_size: int
    scheme: str = PERMUTATION_SCHEME

    @classmethod
    def from_config(cls, config) -> "MinHashSettings":
        return cls(config.num_perm, config.bands, config.rows, config.seed, config.shingle_size)

    def record(self) -> dict:
        return {
            "num_perm": self.num_perm,
            "bands": self.bands,
            "rows": self.rows,
            "seed": self.seed,
            "shingle_size": self.shingle_size,
            "permutation_scheme": self.scheme,
            "hash_function": "xxh32",
            "lsh_threshold": round(lsh_threshold(self.bands, self.rows), 4),
        }


# MurmurHash3's 32-bit finaliser, as datasketch's affine32 scheme applies it before permuting.
_FMIX_SHIFT_1, _FMIX_SHIFT_2, _FMIX_SHIFT_3 = np.uint32(16), np.uint32(13), np.uint32(16)
_FMIX_MULTIPLIER_1, _FMIX_MULTIPLIER_2 = np.uint32(0x85EBCA6B), np.uint32(0xC2B2AE35)


def _identity(value):
    return value


class Signer:
    """Turns text into a MinHash signature. One per worker: the permutations (num_perm x 2
    integers drawn from `seed`) are made once and shared by every signature.

    Shingles are hashed once (xxh32, `shingle_hashes`); the signature applies the template's
    permutations to those 32-bit values (`signature`), which gives exactly the signature that
    datasketch's `update_batch(shingles)` with `hashfunc=xxh32_intdigest` gives, and lets
    verification reuse the same hashes. `minhash` is the datasketch object of the same set.
    """

    def __init__(self, settings: MinHashSettings):
        if settings.bands * settings.rows > settings.num_perm:
            raise ValueError(f"bands x rows = {settings.bands * settings.rows} exceeds num_perm = {settings.num_perm}")
        self.settings = settings
        self._template = MinHash(
            num_perm=settings.num_perm, seed=settings.seed, hashfunc=_identity, scheme=settings.scheme
        )
        multipliers, offsets = self._template.permutations
        self._multipliers = np.asarray(multipliers, dtype=np.uint32)
        self._offsets = np.asarray(offsets, dtype=np.uint32)

    def hashes(self, text: str) -> np.ndarray:
        """Sorted distinct shingle hashes of a text (empty for a text without a word)."""
        return shingle_hashes(word_tokens(text), self.settings.shingle_size)

    def minhash(self, hashes: np.ndarray):
        """The datasketch MinHash of a shingle-hash set (permutations shared with the template)."""
        minhash = self._template.copy()
        minhash.update_batch(hashes.tolist())
        return minhash

    def signature(self, hashes: np.ndarray) -> np.ndarray | None:
        """The num_perm hash values (uint32), or None for an empty set: datasketch's affine32
        scheme (MurmurHash3 32-bit finaliser, then a * x + b mod 2**32 per permutation, minimum
        over the set) on the whole array at once, without datasketch's per-value Python list
        and copy (~2x faster; tests check it equals `minhash(hashes).hashvalues`)."""
        if not hashes.size:
            return None
        mixed = hashes ^ (hashes >> _FMIX_SHIFT_1)
        mixed *= _FMIX_MULTIPLIER_1
        mixed ^= mixed >> _FMIX_SHIFT_2
        mixed *= _FMIX_MULTIPLIER_2
        mixed ^= mixed >> _FMIX_SHIFT_3
        permuted = mixed[:, None] * self._multipliers
        permuted += self._offsets
        return permuted.min(axis=0)

    def sign(self, text: str) -> np.ndarray | None:
        return self.signature(self.hashes(text))

    def signatures(self, hash_arrays: Sequence[np.ndarray], values_per_chunk: int = 1 << 14) -> np.ndarray:
        """(documents, num_perm) uint32 signatures of non-empty shingle-hash arrays, equal row
        for row to `signature`: up to `values_per_chunk` hashes of consecutive documents are
        permuted in one (num_perm, values) numpy operation and reduced per document along the
        contiguous axis (`minimum.reduceat`); the chunk bounds the temporary to
        num_perm x values x 4 bytes (8 MB)."""
        result = np.empty((len(hash_arrays), self.settings.num_perm), dtype=np.uint32)
        start = 0
        while start < len(hash_arrays):
            end, values = start, 0
            while end < len(hash_arrays) and (end == start or values + hash_arrays[end].size <= values_per_chunk):
                values += hash_arrays[end].size
                end += 1
            chunk = hash_arrays[start:end]
            hashes = np.concatenate(chunk)
            mixed = hashes ^ (hashes >> _FMIX_SHIFT_1)
            mixed *= _FMIX_MULTIPLIER_1
            mixed ^= mixed >> _FMIX_SHIFT_2
            mixed *= _FMIX_MULTIPLIER_2
            mixed ^= mixed >> _FMIX_SHIFT_3
            permuted = self._multipliers[:, None] * mixed[None, :]
            permuted += self._offsets[:, None]
            offsets = np.cumsum([0] + [array.size for array in chunk[:-1]])
            result[start:end] = np.minimum.reduceat(permuted, offsets, axis=1).T
            start = end
        return result


# Odd 64-bit constants of the band-key mix (splitmix64's and MurmurHash3's fmix64).
_BAND_SEED = np.uint64(0x9E3779B97F4A7C15)
_BAND_MULTIPLIER = np.uint64(0xBF58476D1CE4E5B9)
_FMIX64_1, _FMIX64_2 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53)
_SHIFT_29, _SHIFT_32, _SHIFT_33 = np.uint64(29), np.uint64(32), np.uint64(33)


def band_hashes(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(documents, bands) uint64 band keys of a (documents, num_perm) signature matrix.

    A band's key mixes its band index and its `rows` values (xor, multiply, shift per value,
    then MurmurHash3's 64-bit finaliser), all documents and bands at once in numpy. Two
    different bands (or the same values in two band positions) share a key with probability
    ~2**-64 per pair, far below the banding's own false-candidate rate; verification checks
    every candidate anyway.
    """
    count = signatures.shape[0]
    values = np.ascontiguousarray(signatures[:, : bands * rows], dtype=np.uint32).reshape(count, bands, rows)
    keys = np.broadcast_to((np.arange(1, bands + 1, dtype=np.uint64) * _BAND_SEED), (count, bands)).copy()
    for row in range(rows):
        keys ^= values[:, :, row].astype(np.uint64)
        keys *= _BAND_MULTIPLIER
        keys ^= keys >> _SHIFT_29
    keys ^= keys >> _SHIFT_33
    keys *= _FMIX64_1
    keys ^= keys >> _SHIFT_33
    keys *= _FMIX64_2
    keys ^= keys >> _SHIFT_32
    return keys


def band_keys(signature: np.ndarray, bands: int, rows: int) -> list[int]:
    """The `bands` bucket keys of one signature (`band_hashes` of a single row)."""
    return band_hashes(signature[None, :], bands, rows)[0].tolist()


# ----------------------------------------------------------------------------------------------
# Survivor rank: which copy of a cluster is kept


def survivor_rank(document: Document, order: Sequence[str]) -> tuple[float, ...]:
    """The document's rank as a tuple of floats (higher is better), one per `order` entry:
    a Document field (`config.SURVIVOR_FIELDS`) or `quality.<signal>`. A missing value ranks
    lowest."""
    values = []
    for name in order:
        if name == "text_length":
            value = float(len(document.text))
        elif name.startswith("quality."):
            value = document.quality.get(name.removeprefix("quality."))
        else:
            value = getattr(document, name)
        values.append(-math.inf if value is None else float(value))
    return tuple(values)


def better(first: tuple[tuple, str], second: tuple[tuple, str]) -> bool:
    """(rank, id) pairs: the higher rank wins, then the smaller id (deterministic everywhere)."""
    return first[0] > second[0] or (first[0] == second[0] and first[1] < second[1])


def removal_detail(cluster: str, survivor: str, cluster_size: int) -> str:
    return json.dumps({"cluster": cluster, "survivor": survivor, "cluster_size": cluster_size}, sort_keys=True)


# ----------------------------------------------------------------------------------------------
# Beam transforms

LSH_NAMESPACE = "07_minhash_lsh"
NODES = "nodes"
NODE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("rank", pa.list_(pa.float64())),
        pa.field("unit", pa.int32(), nullable=False),
    ]
)
ID_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("unit", pa.int32(), nullable=False),
        pa.field("row", pa.int32(), nullable=False),
    ]
)


SIGNED_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("rank", pa.list_(pa.float64())),
        pa.field("hashes", pa.binary()),
    ]
)
ENDPOINT_SCHEMA = pa.schema(
    [
        pa.field("unit", pa.int32(), nullable=False),
        pa.field("id", pa.string(), nullable=False),
        pa.field("hashes", pa.binary()),
    ]
)
BAND_SCHEMA = pa.schema(
    [
        pa.field("key", pa.uint64(), nullable=False),
        pa.field("id", pa.string(), nullable=False),
        pa.field("unit", pa.int32(), nullable=False),
    ]
)


def signed_path(work_dir: str, unit: int) -> str:
    """Per input unit: id, survivor rank and shingle hashes of every signed document."""
    return f"{work_dir}/signed/unit-{unit:06d}.parquet"


def band_path(work_dir: str, partition: int, unit: int) -> str:
    """The band records (key, id, unit) of one input unit whose key falls in one partition."""
    return f"{work_dir}/bands/partition-{partition:05d}/unit-{unit:06d}.parquet"


def endpoint_path(work_dir: str, partition: int, unit: int) -> str:
    """The (unit, id, shingle hashes) of one unit's candidate documents that one verification
    partition needs."""
    return f"{work_dir}/endpoints/partition-{partition:05d}/unit-{unit:06d}.parquet"


def id_path(work_dir: str, partition: int, unit: int) -> str:
    """Every document's (id, unit, row) of one input unit whose id falls in one partition: the
    duplicate-id check reads one partition at a time."""
    return f"{work_dir}/ids/partition-{partition:05d}/unit-{unit:06d}.parquet"


def band_partitions(documents: int, bands: int, records_per_partition: int) -> int:
    """How many partitions the band records are written in, so that one partition holds at most
    `records_per_partition` of them: the knob that bounds a worker's memory, whatever N is."""
    return max(1, math.ceil(documents * bands / max(1, records_per_partition)))


def _write_table(table: pa.Table, path: str) -> None:
    # Whole-file writes under a deterministic name: a retried bundle overwrites the same file.
    with FileSystems.create(path) as handle:
        pq.write_table(table, handle)


def _read_table(path: str, columns: Sequence[str] | None = None) -> pa.Table:
    with FileSystems.open(path) as handle:
        return pq.read_table(handle, columns=columns)


class SignUnits(beam.DoFn):
    """(unit index, Parquet path) -> files, no per-document elements: the unit's signed
    documents (`signed_path`) and its band records split by key into `partitions` files
    (`band_path`). Signatures are computed per unit in batches (`Signer.signatures`) and band
    keys for the whole unit at once (`band_hashes`). Yields the unit index (main; the next
    step waits on it) and, `DEAD_LETTER`, [unit, dead-letter JSON] of documents whose signature
    failed."""

    def __init__(self, settings: MinHashSettings, rank_order: Sequence[str], work_dir: str, partitions: int):
        self.settings = settings
        self.rank_order = tuple(rank_order)
        self.work_dir = work_dir
        self.partitions = partitions

    def setup(self):
        self.signer = Signer(self.settings)
        self.signed = Metrics.counter(LSH_NAMESPACE, "documents_signed")
        self.without_words = Metrics.counter(LSH_NAMESPACE, "documents_without_words")
        self.failed = Metrics.counter(LSH_NAMESPACE, "documents_failed")

    def process(self, unit):
        index, path = unit
        ids, ranks, hash_arrays = [], [], []
        without_words = 0
        rows = _read_table(path).to_pylist()
        all_ids = [str(row.get("id")) for row in rows]
        for row in rows:
            try:
                document = Document.from_row(row)
                hashes = self.signer.hashes(document.text)
                if not hashes.size:
                    without_words += 1
                    continue
                rank = survivor_rank(document, self.rank_order)
            except Exception as error:  # one bad document must not fail the job
                self.failed.inc()
                letter = DeadLetter(
                    step=MINHASH_STEP,
                    kind="signature_failed",
                    message=f"{type(error).__name__}: {error}",
                    source=str(row.get("id")),
                    url=str(row.get("url") or ""),
                    preview=str(row.get("text") or "")[:200],
                )
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, json.dumps([index, letter.to_json()]))
                continue
            ids.append(document.id)
            ranks.append(list(rank))
            hash_arrays.append(hashes)
        self.without_words.inc(without_words)
        settings = self.settings
        if ids:
            keys = band_hashes(self.signer.signatures(hash_arrays), settings.bands, settings.rows)
        else:
            keys = np.zeros((0, settings.bands), dtype=np.uint64)
        id_array = pa.array(ids, pa.string())
        _write_table(
            pa.table(
                [
                    id_array,
                    pa.array(ranks, pa.list_(pa.float64())),
                    pa.array([h.tobytes() for h in hash_arrays], pa.binary()),
                ],
                schema=SIGNED_SCHEMA,
            ),
            signed_path(self.work_dir, index),
        )
        partition_of = keys % np.uint64(self.partitions)
        for partition in range(self.partitions):
            documents, _ = np.nonzero(partition_of == partition)
            records = pa.table(
                [
                    pa.array(keys[partition_of == partition], pa.uint64()),
                    id_array.take(pa.array(documents)),
                    pa.array(np.full(documents.size, index, dtype=np.int32)),
                ],
                schema=BAND_SCHEMA,
            )
            _write_table(records, band_path(self.work_dir, partition, index))
        partitions = self.partitions
        id_partition = np.array(
            [xxhash.xxh3_64_intdigest(value.encode("utf-8", "surrogatepass")) % partitions for value in all_ids],
            dtype=np.int64,
        )
        all_id_array = pa.array(all_ids, pa.string())
        for partition in range(self.partitions):
            positions = np.flatnonzero(id_partition == partition)
            _write_table(
                pa.table(
                    [
                        all_id_array.take(pa.array(positions)),
                        pa.array(np.full(positions.size, index, dtype=np.int32)),
                        pa.array(positions.astype(np.int32)),
                    ],
                    schema=ID_SCHEMA,
                ),
                id_path(self.work_dir, partition, index),
            )
        self.signed.inc(len(ids))
        yield index


class PartitionEdges(beam.DoFn):
    """Partition index -> candidate edges ((larger id, smaller id), (its unit, the other's unit))
    of every shared bucket in it; the partition's band records are sorted by key in numpy, so
    only buckets of two or more documents cost Python time.

    Without verification a star to the bucket's smallest id connects the bucket as well as all
    pairs would. With verification, buckets of up to `pairwise_limit` members emit every pair
    (a star would only verify members against the centre and lose pairs of two similar
    non-centre members); larger buckets fall back to the star, so edges stay O(bucket).
    """

    def __init__(self, work_dir: str, pairwise_limit: int):
        self.work_dir = work_dir
        self.pairwise_limit = pairwise_limit

    def setup(self):
        self.shared_buckets = Metrics.counter(LSH_NAMESPACE, "shared_buckets")
        self.bucket_size = Metrics.distribution(LSH_NAMESPACE, "shared_bucket_size")

    def process(self, partition):
        pattern = band_path(self.work_dir, partition, 0).rsplit("/", 1)[0] + "/*.parquet"
        paths = sorted(metadata.path for metadata in FileSystems.match([pattern])[0].metadata_list)
        if not paths:
            return
        table = pa.concat_tables([_read_table(path) for path in paths])
        keys = table.column("key").to_numpy()
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
        same_as_next = ordered[1:] == ordered[:-1]
        # A shared bucket is a run of equal keys: its records are `order[start:stop]`.
        starts = np.flatnonzero(np.concatenate(([True], ~same_as_next)))
        stops = np.concatenate((starts[1:], [ordered.size]))
        shared = stops - starts >= 2
        if not shared.any():
            return
        positions = np.concatenate([order[a:b] for a, b in zip(starts[shared], stops[shared])])
        members = table.take(pa.array(positions))
        member_ids = members.column("id").to_pylist()
        member_units = members.column("unit").to_pylist()
        at = 0
        for size in (stops - starts)[shared].tolist():
            bucket = zip(member_ids[at : at + size], member_units[at : at + size])
            at += size
            units: dict[str, int] = {}
            for member_id, unit in bucket:
                units[member_id] = min(unit, units.get(member_id, unit))
            self.shared_buckets.inc()
            self.bucket_size.update(size)
            ids = sorted(units)
            if size <= self.pairwise_limit:
                for i, first in enumerate(ids):
                    for second in ids[i + 1 :]:
                        yield ((second, first), (units[second], units[first]))
            else:
                smallest = ids[0]
                for member_id in ids[1:]:
                    yield ((member_id, smallest), (units[member_id], units[smallest]))


def _counted(namespace: str, name: str):
    def count(element):
        Metrics.counter(namespace, name).inc()
        return element

    return count


def _any_value(values):
    # Every copy of a node's value is the same; keep one.
    for value in values:
        return value
    return None


class CandidateEdges(beam.PTransform):
    """A PCollection whose completion means the band files are written (the signed units) ->
    distinct candidate edges ((larger id, smaller id), (units)) of the `partitions` partitions."""

    def __init__(self, work_dir: str, partitions: int, pairwise_limit: int):
        super().__init__()
        self.work_dir = work_dir
        self.partitions = partitions
        self.pairwise_limit = pairwise_limit

    def expand(self, signed_units):
        partitions = self.partitions
        return (
            signed_units
            | "All units signed" >> beam.combiners.Count.Globally()
            | "Partitions" >> beam.FlatMap(lambda _: range(partitions))
            | "Spread partitions" >> beam.Reshuffle()
            | "Bucket edges" >> beam.ParDo(PartitionEdges(self.work_dir, self.pairwise_limit))
            | "Distinct edges" >> beam.CombinePerKey(min)
            | "Count candidate pairs" >> beam.Map(_counted(LSH_NAMESPACE, "candidate_pairs"))
        )


def _edge_partition(item, partitions: int):
    """((larger id, smaller id), units) -> (verification partition, the same item): a hash of the
    pair, so each partition gets ~1/`partitions` of the edges whatever their files."""
    edge = item[0]
    key = f"{edge[0]}\x1f{edge[1]}".encode("utf-8", "surrogatepass")
    return (xxhash.xxh3_64_intdigest(key) % partitions, item)


def _endpoint_requests(keyed):
    """(partition, ((larger, smaller), (its unit, the other's unit))) -> (unit, (id, partition))
    for both endpoints: which partitions need which document's hashes."""
    partition, (edge, units) = keyed
    yield (units[0], (edge[0], partition))
    yield (units[1], (edge[1], partition))


class _WriteEndpoints(beam.DoFn):
    """(unit, [(id, partition)]) -> per partition, one file (`endpoint_path`) with the unit, id
    and shingle hashes of the unit's documents that partition asked for: the unit's signed file
    is read once and filtered in Arrow, and the hashes travel through files, not through the
    runner (whose shuffles the direct runner holds in its driver's memory). Yields the unit
    (main; the comparison waits on every unit) and `NODES`: (id, (rank, unit)) of each
    requested document."""

    def __init__(self, work_dir: str):
        self.work_dir = work_dir

    def process(self, grouped):
        unit, requests = grouped
        wanted: dict[str, set[int]] = {}
        for document_id, partition in requests:
            wanted.setdefault(document_id, set()).add(partition)
        table = _read_table(signed_path(self.work_dir, unit))
        rows = table.filter(pc.is_in(table.column("id"), value_set=pa.array(list(wanted), pa.string())))
        row_ids = rows.column("id").to_pylist()
        # A repeated id within a unit: the last copy, as a dict built over the rows keeps.
        last = {document_id: position for position, document_id in enumerate(row_ids)}
        ranks = rows.column("rank").to_pylist()
        by_partition: dict[int, list[int]] = {}
        for document_id, position in last.items():
            yield beam.pvalue.TaggedOutput(NODES, (document_id, (tuple(ranks[position]), unit)))
            for partition in wanted[document_id]:
                by_partition.setdefault(partition, []).append(position)
        for partition, positions in sorted(by_partition.items()):
            selected = rows.take(pa.array(positions, pa.int64()))
            _write_table(
                pa.table(
                    [
                        pa.array(np.full(len(positions), unit, dtype=np.int32)),
                        selected.column("id"),
                        selected.column("hashes"),
                    ],
                    schema=ENDPOINT_SCHEMA,
                ),
                endpoint_path(self.work_dir, partition, unit),
            )
        yield unit


class _ComparePartition(beam.DoFn):
    """(partition, {"edges": its edges, "ready": markers}) -> edges whose exact Jaccard reaches
    `threshold` (every edge whose endpoints were signed when `threshold` is None). Reads the
    partition's endpoint files: the hashes of the endpoints of ~1/partitions of the edges."""

    def __init__(self, work_dir: str, threshold: float | None):
        self.work_dir = work_dir
        self.threshold = threshold

    def setup(self):
        self.verified = Metrics.counter(LSH_NAMESPACE, "verified_pairs")
        self.rejected = Metrics.counter(LSH_NAMESPACE, "rejected_pairs")
        self.similarity = Metrics.distribution(LSH_NAMESPACE, "verified_similarity_percent")

    def process(self, grouped):
        partition, sides = grouped
        edges = list(sides["edges"])
        if not edges:
            return
        pattern = endpoint_path(self.work_dir, partition, 0).rsplit("/", 1)[0] + "/*.parquet"
        hashes: dict[tuple[int, str], bytes] = {}
        for metadata in FileSystems.match([pattern])[0].metadata_list:
            table = _read_table(metadata.path)
            columns = (table.column(name).to_pylist() for name in ("unit", "id", "hashes"))
            for unit, document_id, blob in zip(*columns):
                hashes[(unit, document_id)] = blob
        for edge, units in edges:
            first = hashes.get((units[0], edge[0]))
            second = hashes.get((units[1], edge[1]))
            if first is None or second is None:  # an endpoint without shingles cannot be verified
                if self.threshold is not None:
                    self.rejected.inc()
                continue
            if self.threshold is None:
                yield edge
                continue
            similarity = jaccard(np.frombuffer(first, dtype=np.uint32), np.frombuffer(second, dtype=np.uint32))
            if similarity >= self.threshold:
                self.verified.inc()
                self.similarity.update(int(similarity * 100))
                yield edge
            else:
                self.rejected.inc()


class VerifyEdges(beam.PTransform):
    """Candidate edges with their endpoints' units -> {"edges": edges whose exact Jaccard (on
    shingle hashes) reaches `threshold` (all of them when None), "nodes": (id, (rank, unit)) of
    every candidate document}.

    Edges are split by a hash of the pair into `partitions` verification partitions. Each
    endpoint asks its unit for its hashes (only ids travel); one task per unit reads its signed
    file once and writes, per partition, the requested rows to a file; once every unit is
    written, one task per partition reads its files and compares its edges. The shingle hashes
    never enter the runner: on the direct runner, which holds every shuffle in its driver's
    memory, they were what grew with the corpus (one array per candidate edge). A task holds
    one unit's signed file, or one partition's edges and their endpoints' hashes.
    """

    def __init__(self, work_dir: str, threshold: float | None, partitions: int):
        super().__init__()
        self.work_dir = work_dir
        self.threshold = threshold
        self.partitions = partitions

    def expand(self, edges):
        partitions = self.partitions
        keyed = edges | "Edge partitions" >> beam.Map(_edge_partition, partitions)
        written = (
            keyed
            | "Endpoint requests" >> beam.FlatMap(_endpoint_requests)
            | "Group requests by unit" >> beam.GroupByKey()
            | "Write endpoints" >> beam.ParDo(_WriteEndpoints(self.work_dir)).with_outputs(NODES, main="units")
        )
        ready = (
            written.units
            | "All endpoints written" >> beam.combiners.Count.Globally()
            | "Partitions ready" >> beam.FlatMap(lambda _: [(partition, True) for partition in range(partitions)])
        )
        compared = (
            {"edges": keyed, "ready": ready}
            | "Join partitions" >> beam.CoGroupByKey()
            | "Compare" >> beam.ParDo(_ComparePartition(self.work_dir, self.threshold))
        )
        nodes = (
            written[NODES]
            | "One rank per node" >> beam.CombinePerKey(_any_value)
            | "Count candidate documents" >> beam.Map(_counted(LSH_NAMESPACE, "candidate_documents"))
        )
        return {"edges": compared, "nodes": nodes}


def _label_members(grouped):
    """At one candidate document: its component label (its star centre, or itself)."""
    node, sides = grouped
    ranked = next(iter(sides["rank"]), None)
    if ranked is None:  # an edge endpoint always has a rank; guard against partial inputs
        return
    rank, unit = ranked
    parent = next(iter(sides["parent"]), None)
    yield (parent or node, (node, tuple(rank), unit))


class _ChooseSurvivor(beam.DoFn):
    """(label, members) -> (loser's unit, (loser id, cluster, survivor, cluster size)) for every
    member but the best one. Two passes over the members; only the best is held."""

    def setup(self):
        self.clusters = Metrics.counter(LSH_NAMESPACE, "clusters")
        self.cluster_size = Metrics.distribution(LSH_NAMESPACE, "cluster_size")

    def process(self, grouped):
        label, members = grouped
        best = None
        size = 0
        for member_id, rank, _ in members:
            size += 1
            if best is None or better((rank, member_id), best):
                best = (rank, member_id)
        if size < 2:
            return
        self.clusters.inc()
        self.cluster_size.update(size)
        survivor = best[1]
        for member_id, _, unit in members:
            if member_id != survivor:
                yield (unit, (member_id, label, survivor, size))


class SelectSurvivors(beam.PTransform):
    """(nodes with (rank, unit), converged star edges) -> (unit, (loser id, cluster, survivor, size))."""

    def expand(self, inputs):
        nodes, edges = inputs
        return (
            {"rank": nodes, "parent": edges}
            | "Join labels" >> beam.CoGroupByKey()
            | "Label members" >> beam.FlatMap(_label_members)
            | "Group clusters" >> beam.GroupByKey()
            | "Choose survivor" >> beam.ParDo(_ChooseSurvivor())
        )


class DuplicateIds(beam.DoFn):
    """Id partition -> (unit, row) of every copy of an id but its first (smallest unit, then
    row): ids are the keys of every dedup join, so a second copy is bad input. One partition's
    ids are sorted in Arrow; only repeated ids cost Python time."""

    def __init__(self, work_dir: str):
        self.work_dir = work_dir

    def process(self, partition):
        pattern = id_path(self.work_dir, partition, 0).rsplit("/", 1)[0] + "/*.parquet"
        paths = sorted(metadata.path for metadata in FileSystems.match([pattern])[0].metadata_list)
        if not paths:
            return
        table = pa.concat_tables([_read_table(path) for path in paths])
        table = table.take(pc.sort_indices(table, [("id", "ascending"), ("unit", "ascending"), ("row", "ascending")]))
        ids = table.column("id")
        if len(ids) < 2:
            return
        repeated = np.flatnonzero(pc.equal(ids.slice(1), ids.slice(0, len(ids) - 1)).to_numpy(zero_copy_only=False)) + 1
        copies = table.take(pa.array(repeated, pa.int64()))
        for unit, row in zip(copies.column("unit").to_pylist(), copies.column("row").to_pylist()):
            yield (unit, row)


class RemoveFromUnit(beam.DoFn):
    """(unit, {path, losers, duplicates, failed}) -> the unit's kept documents written as one
    Parquet file under `documents_dir` (a filter in Arrow, no per-document elements); removed
    rows (`REMOVED`) and dead letters (`DEAD_LETTER`) as elements. Every input document is
    counted exactly once."""

    def __init__(self, documents_dir: str, units: int):
        self.documents_dir = documents_dir
        self.units = units

    def setup(self):
        self.counters = StepCounters(MINHASH_STEP)

    def process(self, grouped):
        unit, sides = grouped
        path = next(iter(sides["path"]))
        losses = {loss[0]: loss[1:] for loss in sides["losers"]}
        duplicates = set(sides["duplicates"])
        failures = {json.loads(letter)["source"]: letter for letter in sides["failed"]}
        table = _read_table(path)
        self.counters.count_in(table.num_rows)
        ids = table.column("id").to_pylist() if table.num_rows else []
        special = [
            row
            for row, document_id in enumerate(ids)
            if row in duplicates or document_id in losses or document_id in failures
        ]
        for row in special:
            document = Document.from_row(table.slice(row, 1).to_pylist()[0])
            if row in duplicates:
                self.counters.count_dead_letter("duplicate_id")
                yield beam.pvalue.TaggedOutput(
                    DEAD_LETTER,
                    DeadLetter(
                        step=MINHASH_STEP,
                        kind="duplicate_id",
                        message="another document has this id",
                        source=document.id,
                        url=document.url,
                        preview=document.text[:200],
                    ).to_json(),
                )
            elif document.id in failures:
                self.counters.count_dead_letter("signature_failed")
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, failures[document.id])
            else:
                cluster, survivor, size = losses[document.id]
                self.counters.count_dropped(NEAR_DUPLICATE_REASON)
                yield beam.pvalue.TaggedOutput(
                    REMOVED,
                    removed_row(document, MINHASH_STEP, NEAR_DUPLICATE_REASON, removal_detail(cluster, survivor, size)),
                )
        keep = np.ones(table.num_rows, dtype=bool)
        keep[special] = False
        kept = table.filter(pa.array(keep))
        self.counters.count_kept(kept.num_rows)
        if kept.num_rows:
            _write_table(
                _as_document_table(kept),
                f"{self.documents_dir}/part-{unit:05d}-of-{self.units:05d}.parquet",
            )


def _as_document_table(table: pa.Table) -> pa.Table:
    """The rows in `DOCUMENT_SCHEMA`: a cheap column selection when the input already has its
    columns and types, else through `Document` (defaults for missing fields, as the readers do)."""
    if all(name in table.column_names for name in DOCUMENT_SCHEMA.names):
        selected = table.select(DOCUMENT_SCHEMA.names)
        if selected.schema.equals(DOCUMENT_SCHEMA):
            return selected
    return documents_to_table(Document.from_row(row) for row in table.to_pylist())


def _unit_and_letter(line: str):
    unit, letter = json.loads(line)
    return (unit, letter)


class ApplyRemovals(beam.PTransform):
    """Input units + losers + failed signatures -> the kept documents written per unit under
    `documents_dir`; tagged outputs REMOVED and DEAD_LETTER. Only losers, duplicate copies and
    failures travel: the documents never leave their unit's worker."""

    def __init__(self, units: list[tuple[int, str]], documents_dir: str, work_dir: str, partitions: int):
        super().__init__()
        self.units = units
        self.documents_dir = documents_dir
        self.work_dir = work_dir
        self.partitions = partitions

    def expand(self, inputs):
        losers, failed_lines = inputs
        pipeline = losers.pipeline
        paths = pipeline | "Input files" >> beam.Create(self.units)
        duplicates = (
            pipeline
            | "Id partitions" >> beam.Create(list(range(self.partitions)))
            | "Spread id partitions" >> beam.Reshuffle()
            | "Duplicate ids" >> beam.ParDo(DuplicateIds(self.work_dir))
        )
        failed = failed_lines | "Failed by unit" >> beam.Map(_unit_and_letter)
        return (
            {"path": paths, "losers": losers, "duplicates": duplicates, "failed": failed}
            | "Join by unit" >> beam.CoGroupByKey()
            | "Remove from unit"
            >> beam.ParDo(RemoveFromUnit(self.documents_dir, len(self.units))).with_outputs(
                REMOVED, DEAD_LETTER, main="kept"
            )
        )
