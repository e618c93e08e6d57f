"""Decontamination core: reading public benchmark formats, the n-gram index, one document."""

from __future__ import annotations

import json

import pytest

from beam_pipelines.accounting import Drop
from beam_pipelines.document import Document
from beam_pipelines.transforms.decontaminate import (
    CONTAMINATED_REASON,
    EMPTIED_REASON,
    ContaminationIndex,
    decontaminate,
    read_benchmark,
    split_segments,
)
from stack_common.errors import ConfigError
from tests.beam_pipelines.dedup.decontamination_fixtures import (
    CLEAN,
    CLEANED_GSM8K_ANSWER,
    EXACT_GSM8K,
    FULLWIDTH_CMATH,
    NEAR_MISS_GSM8K,
    REFORMATTED_MATH,
    SHORT_ITEM_ALONE,
    SHORT_ITEM_INSIDE,
    write_benchmarks,
)

FORMATS = {"gsm8k": "gsm8k", "math": "math", "cmath": "cmath", "agieval": "agieval", "extra": "auto"}


@pytest.fixture(scope="module")
def benchmarks(tmp_path_factory):
    return write_benchmarks(tmp_path_factory.mktemp("benchmarks"))


def _items(benchmarks, include_answers=True):
    items = []
    for name, path in benchmarks.items():
        found, _ = read_benchmark(name, str(path), FORMATS[name], include_answers=include_answers)
        items += found
    return items


def test_public_formats_are_read_with_their_fields_and_ids(benchmarks):
    gsm8k, files = read_benchmark("gsm8k", str(benchmarks["gsm8k"]), "gsm8k")
    assert [f.rsplit("/", 1)[-1] for f in files] == ["test.jsonl"]
    # question + answer + the answer without calculator annotations, per record
    assert [(i.item_id, i.field) for i in gsm8k] == [
        ("test.jsonl:1", "question"),
        ("test.jsonl:1", "answer"),
        ("test.jsonl:1", "answer"),
        ("test.jsonl:2", "question"),
        ("test.jsonl:2", "answer"),
        ("test.jsonl:2", "answer"),
    ]
    assert "<<" in gsm8k[1].text and "<<" not in gsm8k[2].text
    math, _ = read_benchmark("math", str(benchmarks["math"]), "math")
    assert {i.item_id for i in math} == {"test/algebra/101.json", "test/counting_and_probability/7.json"}
    cmath, _ = read_benchmark("cmath", str(benchmarks["cmath"]), "cmath")
    assert [(i.item_id, i.field, i.text) for i in cmath][1] == ("cmath-3-17", "answer", "4")
    agieval, _ = read_benchmark("agieval", str(benchmarks["agieval"]), "agieval")
    assert len(agieval) == 1 and "(B)96" in agieval[0].text  # options belong to the question
    extra, _ = read_benchmark("extra", str(benchmarks["extra"]), "auto")
    assert [(i.item_id, i.field) for i in extra] == [("extra.json:0", "question"), ("extra.json:0", "answer")]
    questions_only, _ = read_benchmark("gsm8k", str(benchmarks["gsm8k"]), "gsm8k", include_answers=False)
    assert {i.field for i in questions_only} == {"question"}


def test_unreadable_or_unrecognised_benchmark_files_fail_with_the_place(tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "fine"}\n{"question": oops}\n')
    with pytest.raises(ConfigError, match=r"broken.jsonl:2 is not JSON"):
        read_benchmark("broken", str(broken))
    strange = tmp_path / "strange.json"
    strange.write_text(json.dumps([{"stem": "What is 2 + 2?"}]))
    with pytest.raises(ConfigError, match="no question/problem.* field in .*strange.json"):
        read_benchmark("strange", str(strange))
    items, _ = read_benchmark("strange", str(strange), question_fields=["stem"])
    assert items[0].text == "What is 2 + 2?"


def _index(benchmarks, short_item_match="segment", include_answers=True):
    return ContaminationIndex.build(_items(benchmarks, include_answers), 10, 3, short_item_match)


def test_index_counts_items_by_how_they_are_matched(benchmarks):
    index = _index(benchmarks)
    assert index.item_counts["gsm8k"] == {"items": 4, "long": 4, "short": 0, "too_short": 0}
    # MATH: "Evaluate log_2 64" is 4 grams (matched whole); CMATH's answer "4" is 1 gram (ignored).
    assert index.item_counts["math"] == {"items": 4, "long": 3, "short": 1, "too_short": 0}
    assert index.item_counts["cmath"] == {"items": 2, "long": 1, "short": 0, "too_short": 1}
    assert index.item_counts["extra"]["short"] == 1


@pytest.mark.parametrize(
    "text, expected",
    [
        (EXACT_GSM8K, ("gsm8k", "test.jsonl:1", "question")),
        (REFORMATTED_MATH, ("math", "test/algebra/101.json", "question")),
        (FULLWIDTH_CMATH, ("cmath", "cmath-3-17", "question")),
        (CLEANED_GSM8K_ANSWER, ("gsm8k", "test.jsonl:1", "answer")),
        (SHORT_ITEM_ALONE, ("math", "test/counting_and_probability/7.json", "question")),
        (NEAR_MISS_GSM8K, None),
        (SHORT_ITEM_INSIDE, None),
        (CLEAN, None),
    ],
    ids=["exact", "reformatted", "cjk-fullwidth", "answer", "short-whole", "near-miss", "short-inside", "clean"],
)
def test_segments_that_match_and_segments_that_do_not(benchmarks, text, expected):
    index = _index(benchmarks)
    found = index.find([CLEAN, text])
    if expected is None:
        assert found == {}
    else:
        assert list(found) == [1] and index.items[found[1][0]] == expected


def test_contains_mode_matches_short_items_anywhere_and_answers_can_be_left_out(benchmarks):
    assert _index(benchmarks, "contains").find([SHORT_ITEM_INSIDE])[0][1] == "evaluate log 2 64"
    assert _index(benchmarks, include_answers=False).find([CLEANED_GSM8K_ANSWER]) == {}


def test_the_near_miss_is_near(benchmarks):
    """Shorter windows would catch it: the 10-gram rule, not the normalisation, lets it through."""
    assert ContaminationIndex.build(_items(benchmarks), 5, 3, "segment").find([NEAR_MISS_GSM8K]) != {}


def test_windows_never_span_two_segments(benchmarks):
    words = EXACT_GSM8K.split()
    # The question cut in two paragraphs of fewer than ten words at the cut point.
    halves = [" ".join(words[:5]), " ".join(words[5:14])]
    assert _index(benchmarks).find(halves) == {}
    assert _index(benchmarks).find([" ".join(halves)]) != {}


def test_segment_level_removal_keeps_the_rest_of_the_document(benchmarks):
    index = _index(benchmarks)
    text = f"Intro paragraph.\n\n{EXACT_GSM8K}\n\n  \n{CLEAN}\nsecond line of the clean paragraph"
    document = Document(id="d", text=text, content_hash="stale")
    outcome = decontaminate(document, index, "segment", "paragraph")
    assert outcome.document.text == f"Intro paragraph.\n\n{CLEAN}\nsecond line of the clean paragraph"
    assert outcome.segments_removed == 1 and outcome.document.content_hash not in ("stale", "")
    assert outcome.document.token_estimate > 0
    [match] = outcome.matches
    assert (match["benchmark"], match["item_id"], match["field"], match["segment"]) == (
        "gsm8k",
        "test.jsonl:1",
        "question",
        1,
    )
    assert match["action"] == "segment_removed" and len(match["matched"].split()) == 10
    # Line segments: only the offending line goes.
    by_line = decontaminate(Document(id="l", text=f"keep me\n{EXACT_GSM8K}\nand me"), index, "segment", "line")
    assert by_line.document.text == "keep me\nand me"


def test_documents_left_empty_or_matched_at_document_level_are_dropped(benchmarks):
    index = _index(benchmarks)
    only_contamination = Document(id="e", text=f"{EXACT_GSM8K}\n\n{FULLWIDTH_CMATH}")
    emptied = decontaminate(only_contamination, index, "segment", "paragraph")
    assert isinstance(emptied.document, Drop) and emptied.document.reason == EMPTIED_REASON
    assert [m["benchmark"] for m in emptied.matches] == ["gsm8k", "cmath"]
    assert {m["action"] for m in emptied.matches} == {"document_dropped"}
    whole = decontaminate(Document(id="w", text=f"{CLEAN}\n\n{REFORMATTED_MATH}"), index, "document", "paragraph")
    assert whole.document.reason == CONTAMINATED_REASON
    assert json.loads(whole.document.detail)["item_id"] == "test/algebra/101.json"
    untouched = Document(id="c", text=CLEAN)
    assert decontaminate(untouched, index, "segment", "paragraph").document is untouched


def test_split_segments_round_trips():
    text = "a\n\nb\n \n\nc\nd\n"
    segments, separators = split_segments(text, "paragraph")
    assert segments == ["a", "b", "c\nd\n"] and "".join(s + p for s, p in zip(segments, separators)) == text
    lines, separators = split_segments(text, "line")
    assert "".join(s + p for s, p in zip(lines, separators)) == text
