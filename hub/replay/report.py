"""The replay report as one self-contained HTML page (plots inlined as PNG data URIs).

:func:`render_html` turns the report dict of :func:`hub.replay.evaluate.run_replay` into a page
with the decision, what happened to the frames, the KPIs of both bundles, the metrics on the
random slice and on strategy picks side by side, and three kinds of plot drawn with matplotlib
(Agg, no display): confusion matrices, per-slice bars of ``candidate - baseline`` with their
bootstrap intervals (one plot per watched metric), and precision-recall curves per class. Nothing
is fetched by the page: no scripts, no external styles. :func:`write_report` writes
``report.json`` and ``report.html`` atomically.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from runtime._atomic import atomic_write_bytes

__all__ = ["render_html", "write_report"]

_MAX_SLICES = 40
_JUDGEMENT_HEAD = [
    "slice", "metric", "n", "baseline", "candidate", "delta", "ci low", "ci high", "status",
    "reason",
]  # fmt: skip


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return (
        f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'
    )


def _confusion_plot(report: dict[str, Any]) -> str:
    import matplotlib.pyplot as plt

    classes = report["classes"]
    fig, axes = plt.subplots(1, 2, figsize=(2 + 0.5 * len(classes) * 2, 1 + 0.45 * len(classes)))
    for ax, who in zip(axes, ("baseline", "candidate"), strict=True):
        m = report["confusion"][who]
        ax.imshow(m, cmap="Blues")
        ax.set_title(f"{who} v{report[who]['version']}")
        ax.set_xticks(range(len(classes) + 1), [*classes, "none"], rotation=90, fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        for r, row in enumerate(m):
            for c, v in enumerate(row):
                if v:
                    ax.text(c, r, str(v), ha="center", va="center", fontsize=6)
    return _png(fig)


def _slice_plots(report: dict[str, Any]) -> str:
    import matplotlib.pyplot as plt

    out = []
    judged = report["decision"]["judgements"]
    for metric in report["spec"]["metrics"]:
        rows = [j for j in judged if j["metric"] == metric and j["delta"] is not None]
        rows = rows[:_MAX_SLICES]
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(7, 0.8 + 0.28 * len(rows)))
        y = list(range(len(rows)))
        deltas = [j["delta"] for j in rows]
        lo = [j["delta"] - j["ci_low"] for j in rows]
        hi = [j["ci_high"] - j["delta"] for j in rows]
        colors = ["#c0392b" if j["status"] != "pass" else "#2e86c1" for j in rows]
        ax.barh(y, deltas, xerr=[lo, hi], color=colors, capsize=2)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(y, [j["slice"] for j in rows], fontsize=7)
        ax.invert_yaxis()
        ax.set_title(
            f"{metric}: candidate - baseline (better →), "
            f"{report['spec']['bootstrap']['level']:.0%} CI"
        )
        out.append(_png(fig))
    return "".join(out)


def _pr_plot(report: dict[str, Any]) -> str:
    import matplotlib.pyplot as plt

    curves = report["pr_curves"]
    if not curves["candidate"]:
        return ""
    fig, ax = plt.subplots(figsize=(5, 4))
    cmap = plt.get_cmap("tab10")
    for k, c in enumerate(report["classes"]):
        for who, style in (("candidate", "-"), ("baseline", "--")):
            pts = curves[who].get(c)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=cmap(k % 10),
                        label=f"{c} ({who})" if who == "candidate" else None)  # fmt: skip
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_title("precision-recall per class (dashed: baseline)")
    ax.legend(fontsize=6, ncol=2)
    return _png(fig)


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _table(head: list[str], rows: list[list[Any]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def render_html(report: dict[str, Any]) -> str:
    """The report as one self-contained HTML page."""
    import matplotlib

    matplotlib.use("Agg")
    dec = report["decision"]
    cand, base = report["candidate"], report["baseline"]
    color = "#1e8449" if dec["decision"] == "pass" else "#c0392b"
    kp = report["kpis"]
    kpi_rows = [[k, kp["baseline"][k], kp["candidate"][k]] for k in kp["candidate"]]
    sel_rows = []
    for sel, d in report["by_selection"].items():
        for m in report["spec"]["metrics"]:
            if m in d["candidate"]:
                sel_rows.append([sel, d["frames"], m, d["baseline"][m], d["candidate"][m]])
    judged = [
        [j["slice"], j["metric"], j["n"], j["baseline"], j["candidate"], j["delta"],
         j["ci_low"], j["ci_high"], j["status"], j["reason"]]
        for j in dec["judgements"]
    ]  # fmt: skip
    counts = report["counts"]
    count_rows = [[k, json.dumps(v) if isinstance(v, dict) else v] for k, v in counts.items()]
    title = f"replay {cand['name']} v{cand['version']} vs v{base['version']}"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}
table{{border-collapse:collapse;margin:1em 0;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:left}}
.decision{{font-size:1.4em;color:{color}}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="decision"><b>{html.escape(dec["decision"].upper())}</b>: {html.escape(dec["summary"])}</p>
<p>candidate digest <code>{cand["digest"]}</code>, baseline digest <code>{base["digest"]}</code>,
spec digest <code>{report["spec_digest"]}</code></p>
<h2>Frames</h2>{_table(["count", "value"], count_rows)}
<h2>Business KPIs ({html.escape(report["spec"]["behaviour"]["model"])})</h2>
{_table(["kpi", f"baseline v{base['version']}", f"candidate v{cand['version']}"], kpi_rows)}
<h2>Random slice (unbiased) and strategy picks (hard cases)</h2>
{_table(["selection", "frames", "metric", "baseline", "candidate"], sel_rows)}
<h2>Per slice</h2>{_slice_plots(report)}
<h2>Confusion matrices</h2>{_confusion_plot(report)}
<h2>Precision-recall</h2>{_pr_plot(report)}
<h2>Every judgement</h2>
{_table(_JUDGEMENT_HEAD, judged)}
</body></html>
"""


def write_report(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` into ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    j, h = out / "report.json", out / "report.html"
    atomic_write_bytes(j, json.dumps(report, indent=2, sort_keys=True).encode())
    atomic_write_bytes(h, render_html(report).encode())
    return j, h
