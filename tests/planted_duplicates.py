"""Generated corpora with planted near-duplicates, built from real text on this machine.

Near-dedup and decontamination are tested and benchmarked on documents whose ground truth is
known. Random words would make every pair trivially dissimilar and every shingle unique; real
prose has the repeated phrases, shared vocabulary and boilerplate that make dedup hard. So the
sentences come from documentation installed with Python: the language reference topics of
`pydoc_data` and the docstrings of standard-library modules (via `sample.collect_sample_pages`).

`generate_documents(count, seed)` yields documents of ~`target_characters` each:
- originals: paragraphs of sentences drawn from the pool;
- near-duplicates of earlier documents (and of earlier near-duplicates, which makes chains):
  word edits (substitution, deletion, insertion) at a random rate up to `max_edit_rate`,
  inserted or deleted sentences, and a site's header/footer boilerplate;
- boilerplate shared by unrelated documents of the same "site", which raises their similarity
  without making them duplicates.
Generation is deterministic for a given seed and pool. Ids are `gen-<index>`, zero-padded so
that string order is index order.

Cost: the sentence pool (~10k sentences, ~1 MB) is built once per process (~1 s); each
document costs O(its length) and only the last `memory` documents are kept for copying, so a
million documents stream with constant memory.
"""

from __future__ import annotations

import functools
import pydoc_data.topics
import random
import re
from dataclasses import dataclass
from typing import Iterator

from beam_pipelines.document import Document
from beam_pipelines.sample import collect_sample_pages

_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"“(])")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


@functools.lru_cache(maxsize=1)
def sentence_pool() -> tuple[str, ...]:
    """Distinct prose sentences (6-60 words, mostly letters) from Python's own documentation."""
    texts = [text for _, text in sorted(pydoc_data.topics.topics.items())]
    try:
        texts += [page.docstring for page in collect_sample_pages(0, 100_000)]
    except Exception:  # the topics alone are enough; docstrings only add variety
        pass
    sentences: set[str] = set()
    for text in texts:
        for paragraph in _PARAGRAPH_BREAK.split(text):
            joined = " ".join(line.strip() for line in paragraph.split("\n") if line.strip())
            for sentence in _SENTENCE_BREAK.split(joined):
                words = sentence.split()
                if 6 <= len(words) <= 60 and _mostly_letters(sentence):
                    sentences.add(sentence)
    return tuple(sorted(sentences))


def _mostly_letters(sentence: str) -> bool:
    return sum(c.isalpha() or c.isspace() for c in sentence) / len(sentence) > 0.85


@dataclass(frozen=True)
class GeneratedDocument:
    document: Document
    # The generated document this one was copied from (None for originals): ground truth for
    # tests, which still measure similarity by brute force rather than trusting it.
    copied_from: str | None


def generate_documents(
    count: int,
    seed: int = 0,
    duplicate_fraction: float = 0.3,
    max_edit_rate: float = 0.08,
    target_characters: int = 2000,
    sites: int = 20,
    boilerplate_fraction: float = 0.5,
    memory: int = 2000,
) -> Iterator[GeneratedDocument]:
    """Yield `count` documents; about `duplicate_fraction` of them are near-copies of earlier ones."""
    rng = random.Random(seed)
    pool = sentence_pool()
    site_boilerplate = [_boilerplate(random.Random(seed * 7919 + site), pool) for site in range(sites)]
    recent: list[tuple[str, list[list[str]]]] = []  # (id, paragraphs of sentences)
    for index in range(count):
        document_id = f"gen-{index:09d}"
        site = rng.randrange(sites)
        copied_from = None
        if recent and rng.random() < duplicate_fraction:
            copied_from, base = recent[rng.randrange(len(recent))]
            paragraphs = _near_copy(base, rng, pool, max_edit_rate)
        else:
            paragraphs = _original(rng, pool, target_characters)
        recent.append((document_id, paragraphs))
        if len(recent) > memory:
            recent.pop(rng.randrange(len(recent)))
        body = "\n\n".join(" ".join(sentences) for sentences in paragraphs)
        if rng.random() < boilerplate_fraction:
            header, footer = site_boilerplate[site]
            body = f"{header}\n\n{body}\n\n{footer}"
        yield GeneratedDocument(
            Document(
                id=document_id,
                url=f"https://site{site}.example.org/page/{index}",
                domain=f"site{site}.example.org",
                text=body,
                source="generated",
                language="en",
                token_estimate=int(len(body.split()) * 1.3),
            ),
            copied_from,
        )


def _original(rng: random.Random, pool: tuple[str, ...], target_characters: int) -> list[list[str]]:
    paragraphs: list[list[str]] = []
    length = 0
    while length < target_characters:
        paragraph = [pool[rng.randrange(len(pool))] for _ in range(rng.randint(2, 5))]
        length += sum(len(s) + 1 for s in paragraph)
        paragraphs.append(paragraph)
    return paragraphs


def _near_copy(
    base: list[list[str]], rng: random.Random, pool: tuple[str, ...], max_edit_rate: float
) -> list[list[str]]:
    paragraphs = [list(p) for p in base]
    if rng.random() < 0.3:  # a sentence inserted (a comment, an ad line, an update note)
        target = paragraphs[rng.randrange(len(paragraphs))]
        target.insert(rng.randint(0, len(target)), pool[rng.randrange(len(pool))])
    if rng.random() < 0.3:  # a sentence deleted
        target = paragraphs[rng.randrange(len(paragraphs))]
        if len(target) > 1:
            target.pop(rng.randrange(len(target)))
    edit_rate = rng.uniform(0.0, max_edit_rate)
    if edit_rate > 0:
        paragraphs = [[_edit_words(s, rng, edit_rate, pool) for s in p] for p in paragraphs]
    return paragraphs


def _edit_words(sentence: str, rng: random.Random, rate: float, pool: tuple[str, ...]) -> str:
    words = sentence.split()
    out: list[str] = []
    for word in words:
        roll = rng.random()
        if roll >= rate:
            out.append(word)
            continue
        kind = rng.randrange(3)
        donor = pool[rng.randrange(len(pool))].split()
        if kind == 0:  # substitution
            out.append(donor[rng.randrange(len(donor))])
        elif kind == 1:  # insertion
            out.extend((word, donor[rng.randrange(len(donor))]))
        # kind == 2: deletion
    return " ".join(out) if out else sentence


def _boilerplate(rng: random.Random, pool: tuple[str, ...]) -> tuple[str, str]:
    menu = " | ".join(
        rng.choice(["Home", "Docs", "Blog", "About", "Contact", "Forum", "Search", "Login", "Tutorials", "News"])
        for _ in range(6)
    )
    header = f"{menu}\n{pool[rng.randrange(len(pool))]}"
    footer = (
        f"{pool[rng.randrange(len(pool))]} {pool[rng.randrange(len(pool))]}\n"
        f"Copyright {rng.randint(2001, 2024)} All rights reserved. Privacy | Terms | Cookies"
    )
    return header, footer
