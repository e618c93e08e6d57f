"""What a person reads after a recall round: the review file, an annotation template, HTML reports.

- `review.yaml` (per round): candidate math domains and, for each, its URL-path prefixes with
  pool / selected / unselected pages and sample titles and URLs of selected and unselected pages.
- `annotations_template.yaml` (per round): every reviewed prefix as a commented line with its
  numbers; uncomment the approved ones and save it as `<annotations_dir>/round_<k>.yaml`.
- `report.html` (per round) and `<output_dir>/report.html` (all rounds): self-contained HTML with
  matplotlib plots (PNG, inlined): score histograms, tokens and pages per round, overlap with
  the previous round, top domains and their selected fractions, hold-out metrics and PR curves.

Cost: reads only the rounds' metrics (bounded by the configured top-N and review limits), never
the corpus.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import yaml
from apache_beam.io.filesystems import FileSystems
from matplotlib.figure import Figure

from beam_pipelines.recall.domains import annotations_path

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.small { font-size: 0.85em; color: #555; } code { background: #f6f6f6; padding: 0 0.2em; }
"""


def _write_text(path: str, text: str) -> None:
    with FileSystems.create(path) as handle:
        handle.write(text.encode("utf-8"))


def _e(value: Any) -> str:
    return html.escape(str(value))


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if value < 1 else f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return _e(value)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for value in row:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                cells.append(f'<td class="num">{_number(value)}</td>')
            else:
                cells.append(f"<td>{value}</td>")  # callers escape text cells
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _figure_html(figure) -> str:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=90)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode("ascii")}">'


def _page(title: str, sections: list[str]) -> str:
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{_e(title)}</h1>{''.join(sections)}</body></html>"
    )


def _link(url: str) -> str:
    return f'<a href="{_e(url)}">{_e(url)}</a>'


# ----------------------------------------------------------------------------------------------
# Plots


def plot_score_histograms(metrics_by_round: list[dict]) -> str:
    figure = Figure(figsize=(11, 3.8))
    pages_axis, tokens_axis = figure.subplots(1, 2)
    for metrics in metrics_by_round:
        histogram = metrics["score_histogram"]
        centres = [(a + b) / 2 for a, b in zip(histogram["edges"], histogram["edges"][1:])]
        label = f"round {metrics['round']}"
        pages_axis.step(centres, histogram["pages"], where="mid", label=label)
        tokens_axis.step(centres, histogram["tokens"], where="mid", label=label)
        for axis in (pages_axis, tokens_axis):
            axis.axvline(
                metrics["selection"]["threshold"], linestyle=":", linewidth=1, color=axis.lines[-1].get_color()
            )
    for axis, name in ((pages_axis, "pages"), (tokens_axis, "tokens")):
        axis.set_yscale("symlog", linthresh=1)
        highest = max((max(m["score_histogram"][name], default=0) for m in metrics_by_round), default=0)
        axis.set_ylim(0, max(10, highest * 3))
        axis.set_xlabel("math score (dotted: the round's cut)")
        axis.set_ylabel(f"pool {name}")
        axis.legend(fontsize=8)
    return _figure_html(figure)


def plot_rounds(metrics_by_round: list[dict]) -> str:
    rounds = [m["round"] for m in metrics_by_round]
    figure = Figure(figsize=(12, 3.5))
    pages_axis, tokens_axis, overlap_axis = figure.subplots(1, 3)
    pages_axis.bar(rounds, [m["selection"]["selected_pages"] for m in metrics_by_round], color="#4c72b0")
    pages_axis.set_title("selected pages")
    tokens_axis.bar(rounds, [m["selection"]["selected_tokens"] for m in metrics_by_round], color="#55a868")
    tokens_axis.set_title("selected tokens")
    overlap = [(m["round"], m["overlap"]["fraction_already_selected"]) for m in metrics_by_round if m.get("overlap")]
    if overlap:
        overlap_axis.plot([r for r, _ in overlap], [f for _, f in overlap], marker="o")
    overlap_axis.set_ylim(0, 1.02)
    overlap_axis.set_title("share selected in the round before")
    for axis in (pages_axis, tokens_axis, overlap_axis):
        axis.set_xlabel("round")
        axis.set_xticks(rounds)
    return _figure_html(figure)


def plot_classifier(metrics_by_round: list[dict]) -> str:
    figure = Figure(figsize=(11, 3.8))
    curve_axis, bars_axis = figure.subplots(1, 2)
    for metrics in metrics_by_round:
        curve = metrics["classifier"]["holdout"]["pr_curve"]
        curve_axis.plot(curve["recall"], curve["precision"], label=f"round {metrics['round']}")
    curve_axis.set_xlabel("recall")
    curve_axis.set_ylabel("precision")
    curve_axis.set_title("hold-out PR curve")
    curve_axis.set_xlim(0, 1.02)
    curve_axis.set_ylim(0, 1.02)
    curve_axis.legend(fontsize=8)
    rounds = [m["round"] for m in metrics_by_round]
    for name in ("precision", "recall", "f1", "average_precision"):
        bars_axis.plot(rounds, [m["classifier"]["holdout"][name] for m in metrics_by_round], marker="o", label=name)
    bars_axis.set_xticks(rounds)
    bars_axis.set_xlabel("round")
    bars_axis.set_ylim(0, 1.02)
    bars_axis.set_title("hold-out metrics (threshold 0.5)")
    bars_axis.legend(fontsize=8)
    return _figure_html(figure)


def plot_top_domains(metrics: dict, limit: int = 20) -> str:
    rows = metrics["top_domains"][:limit][::-1]
    figure = Figure(figsize=(8, 0.35 * max(4, len(rows)) + 1))
    axis = figure.subplots()
    threshold = metrics["candidate_rule"]["min_selected_fraction"]
    colours = ["#c44e52" if r["selected_fraction"] > threshold else "#8c8c8c" for r in rows]
    axis.barh([r["domain"] for r in rows], [r["selected_fraction"] for r in rows], color=colours)
    axis.axvline(threshold, linestyle=":", color="black")
    axis.set_xlim(0, 1)
    axis.set_xlabel(f"fraction of the domain's pool pages selected (round {metrics['round']}; red: candidate)")
    return _figure_html(figure)


# ----------------------------------------------------------------------------------------------
# Round report and review files


def _domain_table(rows: list[dict], threshold: float) -> str:
    return _table(
        ["domain", "pool pages", "selected pages", "selected fraction", "pool tokens", "selected tokens", "candidate"],
        [
            [
                _e(r["domain"]),
                r["pool_pages"],
                r["selected_pages"],
                r["selected_fraction"],
                r["pool_tokens"],
                r["selected_tokens"],
                "yes" if r["selected_fraction"] > threshold else "",
            ]
            for r in rows
        ],
    )


def _samples_html(samples: list[dict]) -> str:
    return "<br>".join(
        f"{_link(s['url'])} <span class='small'>{_e(s['title'])} (score {s['score']})</span>" for s in samples
    )


def review_section(review_rows: list[dict]) -> str:
    if not review_rows:
        return "<p>No candidate math domain this round.</p>"
    return _table(
        [
            "prefix",
            "pool pages",
            "selected",
            "not selected",
            "selected fraction",
            "sample selected pages",
            "sample pages not selected",
        ],
        [
            [
                _e(r["prefix"]),
                r["pool_pages"],
                r["selected_pages"],
                r["unselected_pages"],
                r["selected_fraction"],
                _samples_html(r["selected_samples"]),
                _samples_html(r["unselected_samples"]),
            ]
            for r in review_rows
        ],
    )


def _summary_rows(metrics: dict) -> list[list[Any]]:
    selection, holdout = metrics["selection"], metrics["classifier"]["holdout"]
    overlap = metrics.get("overlap")
    return [
        [
            metrics["round"],
            selection["selected_pages"],
            selection["pool_pages"],
            selection["selected_tokens"],
            selection["budget_tokens"],
            selection["threshold"],
            overlap["fraction_already_selected"] if overlap else "-",
            holdout["precision"],
            holdout["recall"],
            holdout["f1"],
            len(metrics["candidate_domains"]),
        ]
    ]


_SUMMARY_HEADERS = [
    "round",
    "selected pages",
    "pool pages",
    "selected tokens",
    "budget tokens",
    "threshold",
    "already selected before",
    "hold-out precision",
    "hold-out recall",
    "hold-out F1",
    "candidate domains",
]


def write_round_report(paths, metrics: dict, review_rows: list[dict]) -> None:
    number = metrics["round"]
    approvals = metrics.get("approvals_applied")
    approvals_html = "<p>Round 1: no approvals yet (positives are the seed set).</p>"
    if approvals:
        approvals_html = (
            _table(
                ["approved prefix", "origin"],
                [
                    [
                        _e(p),
                        "reviewer"
                        if p in approvals["from_annotations"]
                        else f"policy {_e(approvals['policy'])} ({_e(approvals['auto_rule'])})",
                    ]
                    for p in approvals["approved"]
                ],
            )
            if approvals["approved"]
            else (
                f"<p>No prefix approved after round {number - 1} (annotations file: "
                f"<code>{_e(approvals['annotations_file'])}</code>"
                f"{'' if approvals['annotations_file_found'] else ', not found'}; policy "
                f"{_e(approvals['policy'])}).</p>"
            )
        )
    training = metrics.get("training") or {}
    model = metrics["classifier"]["model"]
    sections = [
        "<h2>Summary</h2>",
        _table(_SUMMARY_HEADERS, _summary_rows(metrics)),
        f"<p>Budget: {_e(metrics['budget']['rule'])}. Selection: <code>{_e(paths.selection_pattern)}</code></p>",
        "<h2>Approvals applied to this round's training set</h2>",
        approvals_html,
        "<h2>Training set and classifier</h2>",
        _table(
            ["count", "value"],
            [[_e(k), v] for k, v in training.items()]
            + [
                [_e("model size (bytes)"), model["bytes"]],
                [_e("vocabulary"), model["vocabulary"]],
                [_e("training seconds"), model["training_seconds"]],
            ],
        ),
        plot_classifier([metrics]),
        "<h2>Scores</h2>",
        plot_score_histograms([metrics]),
        "<h2>Domains</h2>",
        plot_top_domains(metrics),
        _domain_table(metrics["top_domains"], metrics["candidate_rule"]["min_selected_fraction"]),
        f"<h2>URL-path review of candidate math domains</h2><p>Candidate: more than "
        f"{metrics['candidate_rule']['min_selected_fraction']:.0%} of the domain's pool pages selected "
        f"(and at least {metrics['candidate_rule']['min_pool_pages']} pool pages). Approve prefixes in the "
        f"annotations file named in <code>{_e(paths.review)}</code>.</p>",
        review_section(review_rows),
    ]
    _write_text(paths.report, _page(f"Recall round {number}", sections))


def write_review_files(config, paths, metrics: dict, review_rows: list[dict]) -> None:
    """review.yaml (everything a reviewer needs) and annotations_template.yaml (to edit)."""
    number = metrics["round"]
    target = annotations_path(config.approval.annotations_dir, number)
    domains = []
    for candidate in metrics["candidate_domains"]:
        prefixes = [
            {
                k: row[k]
                for k in (
                    "prefix",
                    "pool_pages",
                    "selected_pages",
                    "unselected_pages",
                    "selected_fraction",
                    "selected_samples",
                    "unselected_samples",
                )
            }
            for row in review_rows
            if row["domain"] == candidate["domain"]
        ]
        if prefixes:
            domains.append(
                {
                    **{k: candidate[k] for k in ("domain", "pool_pages", "selected_pages", "selected_fraction")},
                    "prefixes": prefixes,
                }
            )
    header = (
        f"# Recall round {number}: URL-path review of candidate math domains.\n"
        f"# A candidate domain has more than {config.domains.candidate_min_selected_fraction:.0%} of its pool pages "
        "selected.\n"
        f"# Pages under a prefix you approve that this round did not select become positives of round {number + 1}.\n"
        f"# Approve by writing {target}\n"
        f"# (start from {paths.template}; format: annotations/README.md).\n"
    )
    body = yaml.safe_dump(
        {"round": number, "annotations_file": target, "domains": domains},
        sort_keys=False,
        allow_unicode=True,
        width=120,
    )
    _write_text(paths.review, header + body)
    lines = [
        f"# Decisions for recall round {number}: uncomment the prefixes you approve (or reject) and save as",
        f"#   {target}",
        "# Numbers: pool pages, selected fraction, pages not selected (these become positives if approved).",
        f"round: {number}",
        'reviewer: ""',
        "approved:",
    ]
    for row in review_rows:
        lines.append(
            f"#  - {row['prefix']}    # {row['pool_pages']} pages, {row['selected_fraction']:.0%} selected, "
            f"{row['unselected_pages']} not selected"
        )
    lines.append("rejected:")
    lines.append('notes: ""')
    _write_text(paths.template, "\n".join(lines) + "\n")


# ----------------------------------------------------------------------------------------------
# Corpus report (all rounds)


def write_corpus_report(output_dir: str, metrics_by_round: list[dict]) -> str:
    path = f"{output_dir.rstrip('/')}/report.html"
    last = metrics_by_round[-1]
    rows = [row for metrics in metrics_by_round for row in _summary_rows(metrics)]
    links = " ".join(f'<a href="round_{m["round"]}/report.html">round {m["round"]}</a>' for m in metrics_by_round)
    sections = [
        f"<p>Rounds: {links}. Each round's selection, model, metrics, domain statistics and review are in "
        f"<code>{_e(output_dir)}/round_&lt;k&gt;/</code>.</p>",
        "<h2>Rounds</h2>",
        _table(_SUMMARY_HEADERS, rows),
        "<h2>Tokens and pages per round, overlap with the previous round</h2>",
        plot_rounds(metrics_by_round),
        "<h2>Score histograms per round</h2>",
        plot_score_histograms(metrics_by_round),
        "<h2>Classifier metrics per round</h2>",
        plot_classifier(metrics_by_round),
        f"<h2>Top domains (round {last['round']})</h2>",
        plot_top_domains(last),
        _domain_table(last["top_domains"], last["candidate_rule"]["min_selected_fraction"]),
    ]
    _write_text(path, _page("DeepSeekMath-style recall: corpus report", sections))
    return path
