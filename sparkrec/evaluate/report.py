"""A self-contained HTML report from ``metrics.json``: tables, training curves, metric-vs-K plots.

Plots are PNGs drawn with matplotlib's Agg backend (no display needed) and embedded as base64
data URIs, so the one file can be mailed, archived or opened from an object store.
"""
from __future__ import annotations

import base64
import html
import io
import json
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: executors and CI have no display
import matplotlib.pyplot as plt  # noqa: E402  (after the backend choice)

from sparkrec.evaluate.ranking_metrics import RANKING_METRICS  # noqa: E402

PROTOCOL_TITLES = {
    "full": "Full ranking (every item the user has not interacted with)",
    "sampled": "Sampled ranking (each test positive among sampled negatives)",
}
LOWER_IS_BETTER = ("rmse", "mae")
HISTORY_SKIP = ("epoch", "lr", "rows_by_rank", "samples_per_s", "seconds")


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(png_b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{png_b64}">'


def training_curves_png(history: Sequence[dict]) -> Optional[str]:
    """One panel per numeric metric of the model's per-epoch history (loss, val_*), or None."""
    keys = [k for k in history[0] if k not in HISTORY_SKIP
            and all(isinstance(h.get(k), (int, float)) and not isinstance(h.get(k), bool) for h in history)] if history else []
    if not keys:
        return None
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.0), squeeze=False)
    for ax, key in zip(axes[0], keys):
        ax.plot(epochs, [h[key] for h in history], marker="o")
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    return _png(fig)


def metric_vs_k_png(results: dict, protocol: str, ks: Sequence[int]) -> Optional[str]:
    """One panel per ranking metric (and coverage for full ranking), one line per recommender."""
    rows = {name: r[protocol] for name, r in results.items() if r.get(protocol)}
    if not rows:
        return None
    metrics = list(RANKING_METRICS) + (["coverage"] if protocol == "full" else [])
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.0), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for name, values in rows.items():
            ys = [values.get(f"{metric}@{k}") for k in ks]
            if all(y is not None for y in ys):
                ax.plot(ks, ys, marker="o", label=name)
        ax.set_title(f"{metric}@K")
        ax.set_xlabel("K")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    return _png(fig)


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return html.escape(str(value))


def _table(results: dict, section: str, columns: Sequence[tuple[str, str]]) -> str:
    """Recommenders as rows; ``columns`` = (group, key) pairs, grouped under a shared header
    (e.g. "K=10"), the best value of each column in bold."""
    rows = {name: r[section] for name, r in results.items() if r.get(section)}
    if not rows:
        return "<p>Not applicable to any recommender here.</p>"
    best = {}
    for _, key in columns:
        values = [v[key] for v in rows.values() if isinstance(v.get(key), float)]
        if values:
            best[key] = min(values) if key in LOWER_IS_BETTER else max(values)
    groups: list[list] = []
    for group, _ in columns:
        if groups and groups[-1][0] == group:
            groups[-1][1] += 1
        else:
            groups.append([group, 1])
    top = "".join(f"<th colspan='{n}'>{html.escape(g)}</th>" for g, n in groups)
    head = "".join(f"<th>{html.escape(key.split('@')[0])}</th>" for _, key in columns)
    body = []
    for name, values in rows.items():
        cells = []
        for _, key in columns:
            v = values.get(key)
            text = _fmt(v)
            cells.append(f"<td><b>{text}</b></td>" if isinstance(v, float) and v == best.get(key) else f"<td>{text}</td>")
        role = html.escape(results[name].get("role", ""))
        body.append(f"<tr><th>{html.escape(name)} <small>({role})</small></th>{''.join(cells)}</tr>")
    return (f"<table><tr><th rowspan='2'>recommender</th>{top}</tr><tr>{head}</tr>"
            f"{''.join(body)}</table>")


def _differences(results: dict, section: str, keys: Sequence[str]) -> str:
    """The model minus each baseline with its 95% interval (paired on the same users or test rows);
    bold where the interval excludes zero."""
    rows = {name: r["model_minus_baseline"][section] for name, r in results.items()
            if (r.get("model_minus_baseline") or {}).get(section)}
    if not rows:
        return ""
    body = []
    for name, gaps in rows.items():
        cells = []
        for key in keys:
            g = gaps.get(key)
            if g is None or g["low"] is None:
                cells.append("<td>-</td>")
                continue
            text = f"{g['difference']:+.4f} <small>[{g['low']:+.4f}, {g['high']:+.4f}]</small>"
            sure = g["low"] > 0 or g["high"] < 0
            cells.append(f"<td><b>{text}</b></td>" if sure else f"<td>{text}</td>")
        body.append(f"<tr><th>model - {html.escape(name)}</th>{''.join(cells)}</tr>")
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    return ("<p>Model minus baseline, 95% interval paired on the same units (bold: the interval excludes 0).</p>"
            f"<table><tr><th></th>{head}</tr>{''.join(body)}</table>")


def _ranking_columns(ks: Sequence[int], coverage: bool) -> list[tuple[str, str]]:
    cols = []
    for k in ks:
        cols += [(f"K={k}", f"{m}@{k}") for m in RANKING_METRICS]
        if coverage:
            cols.append((f"K={k}", f"coverage@{k}"))
    return cols + [("", "mrr"), ("", "users"), ("", "lists")]


def _definition_list(items: dict) -> str:
    def text(v):
        return html.escape(json.dumps(v, sort_keys=True)) if isinstance(v, (dict, list)) else _fmt(v)
    return "<ul>" + "".join(f"<li><b>{html.escape(k)}</b>: {text(v)}</li>" for k, v in items.items()) + "</ul>"


def _features(pairs: Sequence[Sequence]) -> str:
    return ", ".join(f"{html.escape(str(f))} ({a:+.3f})" for f, a in pairs) or "–"


def explanations_section(digest: dict) -> str:
    """Why the model recommends what it does, for a few users (``explanations/<name>/`` digest):
    the features that pushed each recommendation's score up and down the most."""
    rows = "".join(
        f"<tr><td>{html.escape(r['user_id'])}</td><td>{html.escape(r['item_id'])}</td><td>{_fmt(r['score'])}</td>"
        f"<td>{html.escape(r['kind'])}</td><td style='text-align:left'>{_features(r['positive'])}</td>"
        f"<td style='text-align:left'>{_features(r['negative'])}</td></tr>" for r in digest["rows"])
    return (f"<h2>Explanations</h2><p>Attributions ({html.escape(digest['method'])}) of the raw score to the "
            f"user's history items or the item's content tokens, of model {html.escape(digest['model_version'])} "
            f"({html.escape(digest['created_at'])}); largest |sum − (score − baseline score)| over all pairs: "
            f"{digest['max_abs_delta']:.2e}.</p><table><tr><th>user</th><th>recommended item</th><th>score</th>"
            f"<th>input</th><th>pushed up</th><th>pushed down</th></tr>{rows}</table>")


def cold_items_section(metrics: dict) -> str:
    """The cold-item protocol (``metrics['cold_items']``): HR and NDCG at each K of every
    recommender that ranked the cold items, and why the others could not."""
    cold, ks, results = metrics["cold_items"], metrics["k"], metrics["results"]
    scored = {name: {"role": results.get(name, {}).get("role", "baseline"), "cold_items": r}
              for name, r in cold["results"].items() if r.get("scored", True)}
    cols = [(f"K={k}", f"{m}@{k}") for k in ks for m in ("hr", "ndcg")] + [("", "users")]
    reasons = "".join(f"<li><b>{html.escape(name)}</b> not scored: {html.escape(r['reason'])}</li>"
                      for name, r in cold["results"].items() if not r.get("scored", True))
    return (f"<h2>Cold items (no training interactions)</h2>"
            f"<p>{html.escape(metrics['protocols']['cold_items']['description'])}</p>"
            f"<p>{cold['cold_items']} cold items, {cold['positives']} relevant test pairs of {cold['users']} users.</p>"
            f"{_table(scored, 'cold_items', cols)}" + (f"<ul>{reasons}</ul>" if reasons else ""))


def render_report(metrics: dict, history: Optional[Sequence[dict]] = None) -> str:
    """The report as one HTML document (UTF-8 text, images inline).

    Parameters
    ----------
    metrics
        The content of ``metrics.json`` (see ``sparkrec.evaluate.run.run_evaluate``).
    history
        The model's per-epoch history (``model.json``), for the training curves; None = none.
    """
    ks = metrics["k"]
    results = metrics["results"]
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>sparkrec evaluation: {html.escape(metrics['name'])}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}"
        "table{border-collapse:collapse;font-size:13px;margin:0.5em 0 1.5em}"
        "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f4f4f4}"
        "img{max-width:100%}</style></head><body>",
        f"<h1>sparkrec evaluation: {html.escape(metrics['name'])}</h1>",
        f"<h3>Evaluated</h3>{_definition_list(metrics['subject'])}",
        f"<h3>Data</h3>{_definition_list({**metrics['data'], 'held-out split': metrics['split']})}",
        f"<h3>Counts</h3>{_definition_list(metrics['counts'])}",
    ]
    if any(r.get("rating") for r in results.values()):
        cols = [("every test row", c) for c in ("rmse", "mae", "rows")]
        parts.append(f"<h2>Rating prediction</h2>{_table(results, 'rating', cols)}"
                     f"{_differences(results, 'rating', ['rmse', 'mae'])}")
    for protocol in ("full", "sampled"):
        info = metrics["protocols"][protocol]
        cols = _ranking_columns(ks, coverage=protocol == "full")
        parts.append(f"<h2>{PROTOCOL_TITLES[protocol]}</h2><p>{html.escape(info['description'])}</p>")
        parts.append(_table(results, protocol, cols))
        parts.append(_differences(results, protocol, [f"{m}@{max(ks)}" for m in ("hr", "ndcg", "recall")] + ["mrr"]))
        png = metric_vs_k_png(results, protocol, ks)
        if png:
            parts.append(_img(png, f"{protocol} metrics vs K"))
    if metrics.get("cold_items", {}).get("results"):  # only when the test split holds cold items
        parts.append(cold_items_section(metrics))
    parts.append("<h2>Training curves</h2>")
    curves = training_curves_png(history or [])
    parts.append(_img(curves, "training curves") if curves else "<p>No per-epoch history recorded.</p>")
    if metrics.get("explanations"):
        parts.append(explanations_section(metrics["explanations"]))
    parts.append(f"<h2>Metric definitions</h2><ul>{''.join(f'<li>{html.escape(d)}</li>' for d in metrics['definitions'])}</ul>")
    notes = [n for r in results.values() for n in r.get("notes", [])]
    if notes:
        parts.append(f"<h2>Notes</h2><ul>{''.join(f'<li>{html.escape(n)}</li>' for n in notes)}</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)
