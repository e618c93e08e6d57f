"""Domain discovery: per-domain statistics, URL-prefix review and approvals.

DeepSeekMath (section 2.1): after a round, a domain (base URL) with more than 10% of its pages
selected is a candidate math domain; people then look at its URL paths (mathoverflow.net/questions
yes, mathoverflow.net/help no) and pages under the approved paths that the classifier missed
become positives of the next round. Here:
- `DomainTally` sums (pool pages, pool tokens, selected pages, selected tokens) per domain;
  `is_candidate_domain` applies the rule (threshold in config).
- `url_prefixes` names the path prefixes of a page ("docs.scipy.org", "docs.scipy.org/doc", ...);
  `PrefixStatsFn` sums the same counts per (domain, prefix) of candidate domains and keeps a few
  sample pages, selected and not, chosen by a hash so every runner picks the same ones.
- Approvals: `load_annotations` reads a reviewer's `round_<k>.yaml` (format in annotations/README.md),
  `auto_approved_prefixes` is the explicit unattended policy (a prefix whose selected fraction
  and pool pages reach the configured thresholds), `ApprovedPrefixes.match` tests a page.

Cost: the statistics are sums per key (combined on workers, one row per domain or reviewed
prefix at the end); samples are bounded per prefix; prefixes per page are at most max_depth + 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator
from urllib.parse import urlsplit

import apache_beam as beam
import pyarrow as pa
import xxhash
import yaml
from apache_beam.io.filesystems import FileSystems

from stack_common.errors import ConfigError


def hash_unit(key: str, salt: str | int = "") -> float:
    """A stable pseudo-random number in [0, 1) for `key` (sampling and sample picking)."""
    return xxhash.xxh64_intdigest(f"{salt}\x1f{key}".encode("utf-8", "surrogatepass")) / 18446744073709551616.0


# ----------------------------------------------------------------------------------------------
# URL prefixes


def normalize_domain(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    return host[4:] if host.startswith("www.") else host


def path_segments(url: str) -> list[str]:
    try:
        path = urlsplit(url).path
    except ValueError:
        return []
    return [segment for segment in path.split("/") if segment]


def directory_segments(url: str) -> list[str]:
    """The folders of a URL's path: `/doc/scipy/index.html` -> [doc, scipy]; `/a/b/` -> [a, b]."""
    segments = path_segments(url)
    try:
        ends_with_slash = urlsplit(url).path.endswith("/")
    except ValueError:
        ends_with_slash = False
    return segments if ends_with_slash else segments[:-1]


def url_prefixes(domain: str, url: str, max_depth: int) -> list[str]:
    """The reviewable prefixes of a page, shortest first: the domain, then each folder level."""
    folders = directory_segments(url)
    return [domain] + [f"{domain}/{'/'.join(folders[:depth])}" for depth in range(1, min(max_depth, len(folders)) + 1)]


def parse_prefix(text: str) -> tuple[str, tuple[str, ...]]:
    """`mathoverflow.net/questions` (a scheme, `www.` and slashes are tolerated) -> (domain, path segments)."""
    text = str(text).strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    host, _, path = text.partition("/")
    domain = normalize_domain(host.split(":", 1)[0])
    if not domain or " " in domain:
        raise ValueError(f"{text!r} is not a URL prefix like mathoverflow.net/questions")
    return domain, tuple(segment for segment in path.split("/") if segment)


def format_prefix(domain: str, segments: tuple[str, ...]) -> str:
    return "/".join((domain, *segments))


class ApprovedPrefixes:
    """A set of approved URL prefixes; a page matches when its domain is the prefix's domain and
    its path segments start with the prefix's segments (so /doc/sci does not match /doc/scipy)."""

    def __init__(self, prefixes: Iterable[str] = ()):
        self.by_domain: dict[str, set[tuple[str, ...]]] = {}
        self.prefixes: list[str] = []
        for prefix in prefixes:
            domain, segments = parse_prefix(prefix)
            if segments not in self.by_domain.setdefault(domain, set()):
                self.by_domain[domain].add(segments)
                self.prefixes.append(format_prefix(domain, segments))

    def __bool__(self) -> bool:
        return bool(self.prefixes)

    def __len__(self) -> int:
        return len(self.prefixes)

    def match(self, domain: str, url: str) -> str | None:
        """The shortest approved prefix that covers the page, or None."""
        approved = self.by_domain.get(normalize_domain(domain))
        if not approved:
            return None
        segments = tuple(path_segments(url))
        for depth in range(0, len(segments) + 1):
            if segments[:depth] in approved:
                return format_prefix(normalize_domain(domain), segments[:depth])
        return None

    def covers(self, prefix: str) -> bool:
        """Whether `prefix` equals or lies under one of these prefixes."""
        domain, segments = parse_prefix(prefix)
        approved = self.by_domain.get(domain, ())
        return any(segments[:depth] in approved for depth in range(len(segments) + 1))


# ----------------------------------------------------------------------------------------------
# Annotations


class AnnotationError(ConfigError):
    """A reviewer's annotation file that cannot be used; the message names the file and entry."""


@dataclass
class Annotations:
    path: str
    approved: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    reviewer: str = ""
    exists: bool = False


def annotations_path(annotations_dir: str, round_number: int) -> str:
    return f"{annotations_dir.rstrip('/')}/round_{round_number}.yaml"


def load_annotations(annotations_dir: str, round_number: int) -> Annotations:
    """Read `round_<k>.yaml` (missing file: nothing approved). Raises AnnotationError on a file
    that is not the documented format, so a typo never silently approves or drops a prefix."""
    path = annotations_path(annotations_dir, round_number)
    if not FileSystems.exists(path):
        return Annotations(path=path)
    with FileSystems.open(path) as handle:
        try:
            payload = yaml.safe_load(handle.read().decode("utf-8"))
        except yaml.YAMLError as error:
            raise AnnotationError(f"{path}: not valid YAML ({' '.join(str(error).split())})") from None
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise AnnotationError(f"{path}: expected a mapping with `approved:` and `rejected:` lists")
    unknown = set(payload) - {"round", "reviewer", "approved", "rejected", "notes"}
    if unknown:
        raise AnnotationError(
            f"{path}: unknown key(s) {', '.join(sorted(map(str, unknown)))} (allowed: round, reviewer, approved, "
            "rejected, notes)"
        )
    if "round" in payload and payload["round"] != round_number:
        raise AnnotationError(f"{path}: says round {payload['round']!r} but the file name is for round {round_number}")
    lists = {}
    for key in ("approved", "rejected"):
        entries = payload.get(key) or []
        if not isinstance(entries, list):
            raise AnnotationError(f"{path}: `{key}` must be a list of URL prefixes like mathoverflow.net/questions")
        cleaned = []
        for entry in entries:
            try:
                cleaned.append(format_prefix(*parse_prefix(entry)))
            except ValueError as error:
                raise AnnotationError(f"{path}: `{key}` entry {entry!r}: {error}") from None
        lists[key] = cleaned
    both = set(lists["approved"]) & set(lists["rejected"])
    if both:
        raise AnnotationError(f"{path}: {', '.join(sorted(both))} both approved and rejected")
    return Annotations(
        path=path,
        approved=lists["approved"],
        rejected=lists["rejected"],
        reviewer=str(payload.get("reviewer") or ""),
        exists=True,
    )


def auto_approved_prefixes(
    review_rows: Iterable[dict], min_selected_fraction: float, min_pool_pages: int, rejected: Iterable[str] = ()
) -> list[str]:
    """The unattended policy: every reviewed prefix with at least `min_pool_pages` pool pages and
    a selected fraction of at least `min_selected_fraction`, except prefixes at or under one a
    reviewer rejected (rejecting `docs.python.org` rejects all of that site)."""
    rejected_prefixes = ApprovedPrefixes(rejected)
    approved = [
        row["prefix"]
        for row in review_rows
        if row["pool_pages"] >= min_pool_pages
        and row["selected_fraction"] >= min_selected_fraction
        and not rejected_prefixes.covers(row["prefix"])
    ]
    return sorted(set(approved))


# ----------------------------------------------------------------------------------------------
# Domain statistics


DOMAIN_FIELDS = ("pool_pages", "pool_tokens", "selected_pages", "selected_tokens")


def sum_tallies(tallies: Iterable[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
    pool_pages = pool_tokens = selected_pages = selected_tokens = 0
    for a, b, c, d in tallies:
        pool_pages += a
        pool_tokens += b
        selected_pages += c
        selected_tokens += d
    return pool_pages, pool_tokens, selected_pages, selected_tokens


def page_tally(tokens: int, selected: bool) -> tuple[int, int, int, int]:
    return (1, tokens, 1, tokens) if selected else (1, tokens, 0, 0)


def domain_row(domain: str, tally: tuple[int, int, int, int]) -> dict:
    pool_pages, pool_tokens, selected_pages, selected_tokens = tally
    return {
        "domain": domain,
        "pool_pages": pool_pages,
        "pool_tokens": pool_tokens,
        "selected_pages": selected_pages,
        "selected_tokens": selected_tokens,
        "selected_fraction": selected_pages / pool_pages if pool_pages else 0.0,
    }


def is_candidate_domain(row: dict, min_selected_fraction: float, min_pool_pages: int) -> bool:
    """Paper: more than `min_selected_fraction` (10%) of the domain's pool pages selected."""
    return row["pool_pages"] >= min_pool_pages and row["selected_fraction"] > min_selected_fraction


def domain_stats_schema():
    return pa.schema(
        [
            pa.field("domain", pa.string()),
            pa.field("pool_pages", pa.int64()),
            pa.field("pool_tokens", pa.int64()),
            pa.field("selected_pages", pa.int64()),
            pa.field("selected_tokens", pa.int64()),
            pa.field("selected_fraction", pa.float64()),
        ]
    )


# ----------------------------------------------------------------------------------------------
# Prefix review


@dataclass
class PrefixAccumulator:
    pool_pages: int = 0
    pool_tokens: int = 0
    selected_pages: int = 0
    selected_tokens: int = 0
    # (hash, url, title, score) of the pages with the smallest hashes: a stable sample.
    selected_samples: list = field(default_factory=list)
    unselected_samples: list = field(default_factory=list)


class PrefixStatsFn(beam.CombineFn):
    """(selected, tokens, sample) per page -> counts and a few stable sample pages per prefix."""

    def __init__(self, samples: int):
        self.samples = samples

    def create_accumulator(self):
        return PrefixAccumulator()

    def add_input(self, accumulator, element):
        selected, tokens, sample = element
        accumulator.pool_pages += 1
        accumulator.pool_tokens += tokens
        if selected:
            accumulator.selected_pages += 1
            accumulator.selected_tokens += tokens
            accumulator.selected_samples = self._keep(accumulator.selected_samples, [sample])
        else:
            accumulator.unselected_samples = self._keep(accumulator.unselected_samples, [sample])
        return accumulator

    def _keep(self, current: list, more: list) -> list:
        if not self.samples:
            return []
        return sorted(current + more)[: self.samples]

    def merge_accumulators(self, accumulators):
        merged = PrefixAccumulator()
        for other in accumulators:
            merged.pool_pages += other.pool_pages
            merged.pool_tokens += other.pool_tokens
            merged.selected_pages += other.selected_pages
            merged.selected_tokens += other.selected_tokens
            merged.selected_samples = self._keep(merged.selected_samples, other.selected_samples)
            merged.unselected_samples = self._keep(merged.unselected_samples, other.unselected_samples)
        return merged

    def extract_output(self, accumulator):
        return accumulator


def prefix_entries(document, selected: bool, candidate_domains: frozenset, max_depth: int) -> Iterator[tuple]:
    """((domain, prefix), (selected, tokens, sample)) for each reviewable prefix of a page of a
    candidate domain; nothing for other domains."""
    if document.domain not in candidate_domains:
        return
    sample = (
        hash_unit(document.id, "review"),
        document.url,
        document.title[:200],
        round(float(document.math_score or 0.0), 4),
    )
    for depth, prefix in enumerate(url_prefixes(document.domain, document.url, max_depth)):
        yield (document.domain, prefix), (selected, document.token_estimate, sample)


def review_row(key: tuple[str, str], accumulator: PrefixAccumulator) -> dict:
    domain, prefix = key
    pool_pages = accumulator.pool_pages
    return {
        "domain": domain,
        "prefix": prefix,
        "depth": prefix.count("/"),
        "pool_pages": pool_pages,
        "pool_tokens": accumulator.pool_tokens,
        "selected_pages": accumulator.selected_pages,
        "selected_tokens": accumulator.selected_tokens,
        "unselected_pages": pool_pages - accumulator.selected_pages,
        "selected_fraction": accumulator.selected_pages / pool_pages if pool_pages else 0.0,
        "selected_samples": [_sample_dict(s) for s in accumulator.selected_samples],
        "unselected_samples": [_sample_dict(s) for s in accumulator.unselected_samples],
    }


def _sample_dict(sample: tuple) -> dict:
    _, url, title, score = sample
    return {"url": url, "title": title, "score": score}


def sort_review_rows(rows: Iterable[dict]) -> list[dict]:
    """Domains by selected pages, then each domain's prefixes in path order (tree-like listing)."""
    rows = list(rows)
    selected_by_domain: dict[str, int] = {}
    for row in rows:
        if row["depth"] == 0:
            selected_by_domain[row["domain"]] = row["selected_pages"]
    return sorted(rows, key=lambda r: (-selected_by_domain.get(r["domain"], 0), r["domain"], r["prefix"]))
