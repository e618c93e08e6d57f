"""Multi-site crawls of real documentation, for judging the recall loop with and without a reviewer.

A crawl is a set of Debian documentation packages, each served from its own site (the package's
real path structure under the project's real URL, `tests/support.py` DEBIAN_DOCS), packed into
one WARC and run through the real `prepare` pipeline. Seed positives come from a package that is
not one of the crawl's sites (python-scipy-doc: the classifier must find the crawl's math sites,
as DeepSeekMath's OpenWebMath seed had to find Common Crawl's).

Labels are by site: every pool page of a math package's site is math, every page of the other
sites is not. A math site's install, licence and index pages count as math too: the loop decides
per site and URL prefix, and a reviewer who knows the site approves its whole documentation. A
site whose package mixes subjects is labelled by what the package documents (Octave, Maxima, GAP,
FLINT, Arb, FFTW, SymPy, Euler, mpmath, SciPy: mathematical software; Django, Celery, Flask,
Werkzeug, Requests, h2o, Python, git: not).

The "reviewer" is an oracle built from those labels: after each round it approves every candidate
math domain (the whole site) and rejects every other candidate domain, in annotations/round_<k>.yaml,
exactly as a person would write the file. `run_with_reviewer` and `run_unattended` run the loop both
ways on the same crawl and settings; `benchmarks/recall_unattended.py` prints them side by side and
tests/beam_pipelines/recall/test_recall_unattended.py asserts the gap.

Crawls: `tune` is the one the unattended policy's thresholds were chosen on; `confirm` (smaller,
the CI test's) and `issue` (the packages the issue names that ship HTML) share no math site with
it. A crawl is cached under the test-data cache, keyed by a hash of the code that makes it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from beam_pipelines.config import register_configs
from beam_pipelines.io.parquet import iter_documents, read_json
from beam_pipelines.io.warc import write_html_warc
from beam_pipelines.recall.loop import run_recall
from beam_pipelines.stages.prepare import run_prepare
from beam_pipelines.transforms.extract import domain_of, extract_text
from stack_common.cli import compose_config
from tests.support import CACHE_DIR, DEBIAN_DOCS, REPO_ROOT, debian_doc_root, html_files

SEED_PACKAGE = "python-scipy-doc"
SEED_PAGES = 100
SEED_MIN_MATH_SPANS = 3


@dataclass(frozen=True)
class CrawlSpec:
    name: str
    math_packages: tuple[str, ...]
    other_packages: tuple[str, ...]
    # Pages per site, chosen by a hash of the path (a large manual would otherwise be the crawl).
    max_pages_per_site: int


CRAWLS = {
    "tune": CrawlSpec(
        "tune",
        ("octave-doc", "gap-doc", "libflint-doc", "python-sympy-doc"),
        ("python-django-doc", "python-celery-doc", "python-flask-doc"),
        800,
    ),
    "confirm": CrawlSpec(
        "confirm",
        ("maxima-doc", "libflint-arb-doc", "libfftw3-doc", "euler-doc"),
        ("git-doc", "python-werkzeug-doc", "python-requests-doc", "h2o-doc"),
        400,
    ),
    "issue": CrawlSpec(
        "issue",
        ("octave-doc", "maxima-doc", "python-mpmath-doc", "python-scipy-doc"),
        ("python-flask-doc", "python-requests-doc", "python3.11-doc", "git-doc"),
        250,
    ),
}


@dataclass(frozen=True)
class Crawl:
    spec: CrawlSpec
    pool_dir: str
    seed_file: str
    math_domains: frozenset
    other_domains: frozenset
    math_ids: frozenset
    all_ids: frozenset
    math_tokens: int
    pool_tokens: int
    pages_by_domain: dict = field(default_factory=dict)


def site_pages(package: str, max_pages: int, shuffled: bool = False) -> list[tuple[str, bytes, str]]:
    """(url, html, content type) of at most `max_pages` of a package's pages, chosen by a hash of
    the path so the subset is the same on every machine (in path order, or hash order)."""
    root = debian_doc_root(package)
    base_url = DEBIAN_DOCS[package][1]
    paths = html_files(root)
    ranked = sorted(paths, key=lambda p: hashlib.sha256(p.relative_to(root).as_posix().encode()).hexdigest())
    paths = ranked[:max_pages] if shuffled else sorted(ranked[:max_pages])
    return [(base_url + p.relative_to(root).as_posix(), p.read_bytes(), "text/html; charset=utf-8") for p in paths]


def _code_fingerprint(spec: CrawlSpec) -> str:
    digest = hashlib.sha256(repr(spec).encode())
    sources = (
        sorted((REPO_ROOT / "beam_pipelines").glob("*.py"))
        + sorted((REPO_ROOT / "beam_pipelines" / "io").glob("*.py"))
        + sorted((REPO_ROOT / "beam_pipelines" / "transforms").glob("*.py"))
        + sorted((REPO_ROOT / "beam_pipelines" / "stages").glob("*.py"))
    )
    for path in sources:
        if path.name not in ("classify.py", "recall.py"):
            digest.update(path.name.encode() + path.read_bytes())
    digest.update((REPO_ROOT / "tests" / "support.py").read_bytes())
    return digest.hexdigest()[:16]


def _prepare_pool(spec: CrawlSpec, target: Path) -> None:
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    pages = [
        page
        for package in spec.math_packages + spec.other_packages
        for page in site_pages(package, spec.max_pages_per_site)
    ]
    warc = staging / "crawl.warc.gz"
    write_html_warc(str(warc), pages)
    config = compose_config(
        "prepare", ["beam=direct", f"corpus.warc_inputs=[{warc}]", f"corpus.work_dir={staging}"], register_configs
    )
    run_prepare(config)
    warc.unlink()
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def seed_file() -> Path:
    """SEED_PAGES OpenWebMath-like pages of the scipy documentation: hash-chosen among the pages
    with at least SEED_MIN_MATH_SPANS math spans (OpenWebMath kept pages that contain math),
    extracted as prepare extracts them; JSONL with text, url and title."""
    path = CACHE_DIR / "recall-crawls" / f"seeds-{SEED_PACKAGE}-{SEED_PAGES}-{SEED_MIN_MATH_SPANS}.jsonl"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for url, html, _ in site_pages(SEED_PACKAGE, 10**6, shuffled=True):
        result = extract_text(html.decode("utf-8", "replace"), url, main_content=True)
        if result.math_spans >= SEED_MIN_MATH_SPANS and len(result.text) >= 500:
            rows.append(json.dumps({"url": url, "title": result.title, "text": result.text}) + "\n")
            if len(rows) == SEED_PAGES:
                break
    staging = path.with_suffix(".partial")
    staging.write_text("".join(rows), encoding="utf-8")
    staging.rename(path)
    return path


def build_crawl(name: str) -> Crawl:
    """Build (or reuse) the named crawl's pool and seed file. Raises RuntimeError when apt
    cannot provide a package."""
    spec = CRAWLS[name]
    for package in spec.math_packages + spec.other_packages + (SEED_PACKAGE,):
        debian_doc_root(package)
    root = CACHE_DIR / "recall-crawls" / f"{name}-{_code_fingerprint(spec)}"
    if not (root / "pool" / "summary.json").exists():
        _prepare_pool(spec, root)
    math_domains = frozenset(domain_of(DEBIAN_DOCS[p][1]) for p in spec.math_packages)
    other_domains = frozenset(domain_of(DEBIAN_DOCS[p][1]) for p in spec.other_packages)
    documents = list(iter_documents(str(root / "pool"), columns=["id", "domain", "token_estimate"]))
    pages_by_domain: dict[str, int] = {}
    for document in documents:
        pages_by_domain[document.domain] = pages_by_domain.get(document.domain, 0) + 1
    unknown = set(pages_by_domain) - math_domains - other_domains
    if unknown:
        raise RuntimeError(f"crawl {name}: pool pages from unexpected sites {sorted(unknown)}")
    math_ids = frozenset(d.id for d in documents if d.domain in math_domains)
    return Crawl(
        spec=spec,
        pool_dir=str(root / "pool"),
        seed_file=str(seed_file()),
        math_domains=math_domains,
        other_domains=other_domains,
        math_ids=math_ids,
        all_ids=frozenset(d.id for d in documents),
        math_tokens=sum(d.token_estimate for d in documents if d.id in math_ids),
        pool_tokens=sum(d.token_estimate for d in documents),
        pages_by_domain=dict(sorted(pages_by_domain.items())),
    )


# ----------------------------------------------------------------------------------------------
# Running the loop with and without the reviewer


def small_pool_overrides(crawl: Crawl, output_dir: str) -> list[str]:
    """The settings both sides share: the README's small-pool fastText settings, one process,
    and a token budget of the math sites' tokens (the size a user would aim for)."""
    return [
        "beam=direct_single",
        f"input_dir={crawl.pool_dir}",
        f"output_dir={output_dir}",
        f"training.seed_positives=[{crawl.seed_file}]",
        f"selection.token_budgets=[{crawl.math_tokens}]",
        "fasttext.epoch=30",
        "fasttext.dim=64",
        "fasttext.bucket=20000",
        "fasttext.max_characters=3000",
    ]


def compose_recall(overrides: list[str]):
    return compose_config("recall", overrides, register_configs)


def selected_ids(directory: str) -> set[str]:
    return {d.id for d in iter_documents(directory, columns=["id"])}


def precision_recall(selected: set[str], math_ids: frozenset) -> dict:
    hits = len(selected & math_ids)
    return {
        "selected_pages": len(selected),
        "precision": round(hits / len(selected), 4) if selected else 0.0,
        "recall": round(hits / len(math_ids), 4) if math_ids else 0.0,
    }


def write_oracle_annotations(crawl: Crawl, output_dir: str, number: int) -> dict:
    """The correct reviewer's annotations/round_<number>.yaml: approve every candidate math
    site, reject every other candidate site."""
    review = yaml.safe_load((Path(output_dir) / f"round_{number}" / "review.yaml").read_text()) or {}
    domains = [entry["domain"] for entry in review.get("domains") or []]
    annotations = {
        "round": number,
        "reviewer": "oracle (site labels)",
        "approved": sorted(d for d in domains if d in crawl.math_domains),
        "rejected": sorted(d for d in domains if d not in crawl.math_domains),
    }
    directory = Path(output_dir) / "annotations"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"round_{number}.yaml").write_text(yaml.safe_dump(annotations))
    return annotations


def _outcome(crawl: Crawl, output_dir: str, status: dict) -> dict:
    rounds = []
    for number in status["complete_rounds"]:
        directory = Path(output_dir) / f"round_{number}"
        metrics = read_json(str(directory / "metrics.json"))
        applied = metrics.get("approvals_applied") or {}
        rounds.append(
            {
                "round": number,
                **precision_recall(selected_ids(str(directory)), crawl.math_ids),
                "holdout_f1": round(metrics["classifier"]["holdout"]["f1"], 4),
                "approved_before": applied.get("approved", []),
            }
        )
    final = precision_recall(selected_ids(f"{output_dir}/final"), crawl.math_ids) if status["final"] else None
    return {"stop_reason": status["stop_reason"], "final": final, "rounds": rounds}


def run_with_reviewer(crawl: Crawl, output_dir: str, extra: tuple[str, ...] = ()) -> dict:
    """The paper's loop: annotations_only, the oracle reviewer writing each round's file."""
    base = small_pool_overrides(crawl, output_dir) + list(extra)
    status: dict = {}
    for number in range(1, compose_recall(base).max_rounds + 1):
        status = run_recall(compose_recall(base + [f"round={number}"]))
        if status["stop_reason"] is not None:
            break
        write_oracle_annotations(crawl, output_dir, number)
    return _outcome(crawl, output_dir, status)


def run_unattended(crawl: Crawl, output_dir: str, extra: tuple[str, ...] = ()) -> dict:
    """No reviewer: +experiment=recall_unattended decides every approval."""
    config = compose_recall(["+experiment=recall_unattended"] + small_pool_overrides(crawl, output_dir) + list(extra))
    return _outcome(crawl, output_dir, run_recall(config))
