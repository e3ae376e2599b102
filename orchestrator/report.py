"""One self-contained HTML page per sweep, to read or mail without an MLflow server.

Built from what MLflow holds, so it works on a finished sweep and on a running one: the
leaderboard and contact sheet of the sweep's run (written when the sweep ends), then per
trial its newest sample grid and its loss / balance / metric curves: the best DETAIL_TRIALS
in full, the rest in one table. Images are inlined as data: URIs and the curves as SVG
written here, so the page loads nothing from anywhere.

At 1,000 trials (bench/report_scale.py) a block per trial made a page of 100+ MB, and
matplotlib's 0.5-2.5 s per figure made minutes of it; the curves are a few polylines each,
which this module writes directly in well under a millisecond.
"""

from __future__ import annotations

import base64
import csv
import datetime
import html
import io
import math
import tempfile
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from orchestrator.compare import CompareError, compare
from orchestrator.contact_sheet import trial_images
from orchestrator.format import redact_uri

LN2 = math.log(2)
DETAIL_TRIALS = 50  # trials shown in full (samples and curves), best first; the rest are rows of a table
OVERVIEW_LABELS = 10  # the overview names the best this many trials; the others are grey lines
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


class ReportError(Exception):
    """A sweep or output file `ganops report` cannot use; the message says what to do."""


def report(tracking_uri: str, sweep: str, out: Path) -> dict:
    """Write the sweep's report to `out`; return what was written."""
    client = MlflowClient(tracking_uri)
    try:
        table = compare(tracking_uri, sweep)
    except CompareError as e:
        raise ReportError(str(e)) from None
    except MlflowException:  # e.g. a quote in the id makes MLflow's filter string invalid
        raise ReportError(
            f"no sweep {sweep!r} in {redact_uri(tracking_uri)}; pass the sweep id the leaderboard prints "
            "(name-YYYYmmdd-HHMMSS) or its MLflow run id"
        ) from None
    parent = client.get_run(table["parent_run_id"])
    page = render(client, parent, table, redact_uri(tracking_uri))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
    except OSError as e:
        raise ReportError(f"cannot write the report to {out}: {e.strerror}; pass a writable file with --out") from None
    return {
        "path": str(out.resolve()),
        "trials": len(table["trials"]),
        "sweep_id": table["sweep_id"],
        "status": table["status"],
    }


def render(client: MlflowClient, parent, table: dict, uri: str) -> str:
    """The page: header, leaderboard, contact sheet, every trial's metric, then one block per trial."""
    metric, trials, status = table["metric"], table["trials"], table["status"]
    with tempfile.TemporaryDirectory() as tmp:
        files = {a.path for a in client.list_artifacts(parent.info.run_id)}
        board = _artifact(client, parent.info.run_id, "leaderboard.csv", tmp) if "leaderboard.csv" in files else None
        sheet = (
            _artifact(client, parent.info.run_id, "contact_sheet.png", tmp) if "contact_sheet.png" in files else None
        )
        histories = _all_histories(client, parent.info.run_id, trials, metric)
        blocks = [
            _trial_block(client, i, t, metric, histories[t["run_id"]], tmp)
            for i, t in enumerate(trials[:DETAIL_TRIALS], 1)
        ]
        if len(trials) > DETAIL_TRIALS:
            blocks.append(_rest_table(trials, metric))
        missing = (
            "the sweep is still running; it is written when the sweep ends"
            if status == "RUNNING"
            else f"the sweep ended {status} without writing it"
        )
        sheet_missing = (
            "the sweep draws it when its first trial ends, then refreshes it as it runs"
            if status == "RUNNING"
            else f"the sweep ended {status} without drawing it"
        )
        leaderboard = (
            _csv_table(board.read_text(encoding="utf-8"), metric)
            if board
            else f'<p class="note">No leaderboard yet: {missing}. Standings from MLflow now:</p>{_live_table(table)}'
        )
        contact = (
            f'<img class="contact-sheet" alt="contact sheet" src="{_data_uri(sheet)}">'
            '<p class="note">Rows: trials, best first. Columns: eval steps. Every cell is drawn from the same fixed '
            "noise.</p>"
            if sheet
            else f'<p class="note">No contact sheet yet: {sheet_missing}. Each trial\'s newest samples are below.</p>'
        )
    overview = (
        _overview_svg(trials, histories, metric)
        if any(histories[t["run_id"]].get(metric) for t in trials)
        else '<p class="note">No trial has reported yet.</p>'
    )
    sweep_id = table["sweep_id"] or parent.info.run_id
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    banner = (
        f'<p class="running">This sweep is still running: {len(trials)} trial(s) so far. The page shows what MLflow '
        f"held at {when}; "
        f"run <code>ganops report {_e(sweep_id)}</code> again for more.</p>"
        if status == "RUNNING"
        else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ganops report: {_e(sweep_id)}</title><style>{CSS}</style></head>
<body>
<header><h1>Sweep {_e(sweep_id)}</h1>
<p class="meta">status <b>{_e(status)}</b> &middot; {len(trials)} trial(s) &middot;
ranked by <b>{_e(metric)}</b> ({_e(table["mode"])}) &middot;
MLflow run <code>{_e(parent.info.run_id)}</code> in {_e(uri)} &middot; generated {when}</p>{banner}</header>
<section id="leaderboard"><h2>Leaderboard</h2><div class="scroll">{leaderboard}</div></section>
<section id="contact-sheet"><h2>Contact sheet</h2>{contact}</section>
<section id="overview"><h2>{_e(metric)} of every trial</h2><figure class="overview">{overview}</figure></section>
<section id="trials"><h2>Trials, best first</h2>
{"".join(blocks) or '<p class="note">No trial has started yet.</p>'}</section>
</body></html>
"""


def _trial_block(client: MlflowClient, rank: int, t: dict, metric: str, hist: dict, tmp: str) -> str:
    """A trial's newest sample grid beside its curves."""
    images = trial_images(client, t["run_id"])
    if images:
        step = max(images)
        path = _artifact(client, t["run_id"], images[step], tmp)
        samples = (
            f'<figure class="samples"><img alt="samples at step {step}" src="{_data_uri(path)}">'
            f"<figcaption>samples at step {step}</figcaption></figure>"
        )
    else:
        samples = '<figure class="samples"><p class="note">no samples yet (logged at the first eval)</p></figure>'
    stop = f" &middot; stopped: {_e(t['stop_reason'])}" if t.get("stop_reason") else ""
    sampled = ", ".join(f"{_e(k)} = {_e(_fmt(v))}" for k, v in sorted(t["sampled"].items())) or "no sampled values"
    value = t.get(metric)
    return (
        f'<article class="trial" id="trial-{_e(t["trial_id"] or t["run_id"])}">'
        f'<h3>#{rank} {_e(t["trial_id"] or t["run_id"])} <span class="status">{_e(t["status"])} at step '
        f"{t['step']}{stop}</span></h3>"
        f'<p class="meta">{sampled} &middot; {_e(metric)} = {_e(_fmt(value)) if value is not None else "-"} &middot; '
        f"run <code>{_e(t['run_id'])}</code></p>"
        f'<div class="row">{samples}<figure class="curves">{_curves_svg(hist, metric)}</figure></div></article>'
    )


def _panels(metric: str) -> list[tuple[str, tuple[str, ...], dict[float, str]]]:
    """(title, metric keys, reference lines): the balance a person reads off a GAN's curves."""
    return [
        ("losses", ("loss_d", "loss_g"), {2 * LN2: "D at equilibrium (2 ln 2)", LN2: "G at equilibrium (ln 2)"}),
        ("D outputs", ("d_x", "d_g_z"), {0.5: "equilibrium (0.5)"}),
        ("gradient norms", ("grad_norm_d", "grad_norm_g"), {}),
        (metric, (metric,), {}),
    ]


def _keys(metric: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(k for _, ks, _ in _panels(metric) for k in ks))


def _all_histories(
    client: MlflowClient, parent_run_id: str, trials: list[dict], metric: str
) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """run id -> metric -> (step, value) points: every curve of the detailed trials, the metric
    of the rest (the overview). A local store answers in one query; else MLflow, per run."""
    from orchestrator import local_store

    found = local_store.metric_histories(client.tracking_uri, parent_run_id, _keys(metric))
    if found is not None:
        return {t["run_id"]: found.get(t["run_id"], {}) for t in trials}
    return {
        t["run_id"]: _histories(client, t["run_id"], _keys(metric) if i < DETAIL_TRIALS else (metric,))
        for i, t in enumerate(trials)
    }


def _histories(client: MlflowClient, run_id: str, keys: tuple[str, ...]) -> dict[str, list[tuple[int, float]]]:
    return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in keys}


def _finite(points: list[tuple[int, float]]) -> list[tuple[int, float]]:
    return [(x, y) for x, y in points if math.isfinite(y)]


def _num(v: float) -> str:
    return f"{v:.3g}"


def _panel(
    x0: float,
    y0: float,
    w: float,
    h: float,
    title: str,
    series: list[tuple[str | None, str, list[tuple[int, float]], float]],
    refs: dict[float, str],
    markers: bool = True,
    legend_cols: int = 2,
) -> str:
    """One chart as SVG elements: frame, title, first/last step and min/max value, a line (and
    markers) per series (label, colour, points, width), dotted reference lines, a legend below.
    Points that are not finite are left out."""
    out = [f'<text x="{x0 + w / 2:.1f}" y="{y0 + 13:.1f}" text-anchor="middle" font-size="12">{_e(title)}</text>']
    px, py, pw, ph = x0 + 42, y0 + 20, w - 52, h - 78  # the plot area inside the panel
    out.append(
        f'<path d="M{px:.1f},{py:.1f}h{pw:.1f}v{ph:.1f}h{-pw:.1f}z" fill="none" stroke="#999" stroke-width="0.8"/>'
    )
    drawn = [(label, color, fin, width) for label, color, pts, width in series if (fin := _finite(pts))]
    if not drawn:
        out.append(
            f'<text x="{px + pw / 2:.1f}" y="{py + ph / 2:.1f}" text-anchor="middle" font-size="11" fill="grey">no '
            "values yet</text>"
        )
        return "".join(out)
    xs = [x for _, _, pts, _ in drawn for x, _ in pts]
    ys = [y for _, _, pts, _ in drawn for _, y in pts] + list(refs)
    xlo, xhi, ylo, yhi = min(xs), max(xs), min(ys), max(ys)
    if xhi == xlo:
        xlo, xhi = xlo - 1, xhi + 1
    pad = (yhi - ylo) * 0.05 or abs(yhi) * 0.05 or 1.0
    ylo, yhi = ylo - pad, yhi + pad

    def at(x: float, y: float) -> str:
        return f"{px + (x - xlo) / (xhi - xlo) * pw:.1f},{py + (yhi - y) / (yhi - ylo) * ph:.1f}"

    for y, _ in refs.items():
        out.append(
            f'<path d="M{at(xlo, y)}H{px + pw:.1f}" stroke="grey" stroke-width="1" stroke-dasharray="2,3" fill="none"/>'
        )
    for _, color, pts, width in drawn:
        out.append(
            f'<path d="M{"L".join(at(x, y) for x, y in pts)}" stroke="{color}" stroke-width="{width}" fill="none"/>'
        )
        if markers:  # a small diamond per eval, as its own path (a browser draws each)
            out.extend(f'<path d="M{at(x, y)}m-2.5,0l2.5,-2.5l2.5,2.5l-2.5,2.5z" fill="{color}"/>' for x, y in pts)
    axis = 'font-size="9" fill="#444"'
    out.append(
        f'<text x="{px - 3:.1f}" y="{py + 4:.1f}" text-anchor="end" {axis}>{_num(yhi - pad)}</text>'
        f'<text x="{px - 3:.1f}" y="{py + ph:.1f}" text-anchor="end" {axis}>{_num(ylo + pad)}</text>'
        f'<text x="{px:.1f}" y="{py + ph + 11:.1f}" {axis}>{xlo if len(set(xs)) > 1 else min(xs)}</text>'
        f'<text x="{px + pw:.1f}" y="{py + ph + 11:.1f}" text-anchor="end" {axis}>{max(xs)}</text>'
        f'<text x="{px + pw / 2:.1f}" y="{py + ph + 11:.1f}" text-anchor="middle" {axis}>step</text>'
    )
    legend = [(label, color, "") for label, color, _, _ in drawn if label] + [
        (label, "grey", ' stroke-dasharray="2,3"') for label in refs.values()
    ]
    cols = 1 if any(len(label) > 18 for label, _, _ in legend) else legend_cols  # long labels get a line each
    for i, (label, color, dash) in enumerate(legend[: max(4, 3 * cols)]):
        lx, ly = px + (i % cols) * pw / cols, py + ph + 24 + (i // cols) * 11
        out.append(
            f'<path d="M{lx:.1f},{ly - 3:.1f}h14" stroke="{color}" stroke-width="2"{dash}/><text x="{lx + 17:.1f}" '
            f'y="{ly:.1f}" font-size="9">{_e(label)}</text>'
        )
    return "".join(out)


def _svg(width: int, height: int, body: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'font-family="sans-serif">{body}</svg>'
    )


def _curves_svg(hist: dict, metric: str) -> str:
    """A trial's four panels: losses, D outputs, gradient norms, the sweep metric."""
    body = "".join(
        _panel(i * 300, 0, 300, 252, title, [(k, COLORS[j], hist.get(k) or [], 1.5) for j, k in enumerate(keys)], refs)
        for i, (title, keys, refs) in enumerate(_panels(metric))
    )
    return _svg(1200, 252, body)


def _overview_svg(trials: list[dict], histories: dict, metric: str) -> str:
    """The sweep metric of every trial: the best OVERVIEW_LABELS in colour and named, the rest grey (drawn first, under
    them)."""
    named = [
        (t["trial_id"] or t["run_id"][:8], COLORS[i % len(COLORS)], histories[t["run_id"]].get(metric) or [], 1.5)
        for i, t in enumerate(trials[:OVERVIEW_LABELS])
    ]
    rest = [(None, "#c8c8c8", histories[t["run_id"]].get(metric) or [], 0.7) for t in trials[OVERVIEW_LABELS:]]
    panel = _panel(
        0,
        0,
        900,
        330,
        f"{metric}, best {min(len(trials), OVERVIEW_LABELS)} named" + (f", {len(rest)} more in grey" if rest else ""),
        rest + named,
        {},
        markers=len(trials) <= OVERVIEW_LABELS,
        legend_cols=5,
    )
    return _svg(900, 330, panel)


def _rest_table(trials: list[dict], metric: str) -> str:
    """The trials after the best DETAIL_TRIALS, one row each."""
    rows = "".join(
        f'<tr id="trial-{_e(t["trial_id"] or t["run_id"])}"><td>{i}</td><td>{_e(t["trial_id"] or "-")}</td>'
        f"<td>{_e(t['status'])}</td><td>{t['step']}</td><td>{_e(_fmt(t.get(metric)))}</td>"
        f"<td>{_e(t['stop_reason'] or '')}</td><td><code>{_e(t['run_id'])}</code></td></tr>"
        for i, t in enumerate(trials[DETAIL_TRIALS:], DETAIL_TRIALS + 1)
    )
    return (
        f'<h3 id="rest">The other {len(trials) - DETAIL_TRIALS} trials</h3><p class="note">Shown in full above: the '
        f"best {DETAIL_TRIALS}. "
        "Curves and samples of any trial: the MLflow UI (<code>ganops ui</code>) or <code>ganops sample "
        "TRIAL</code>.</p>"
        '<div class="scroll"><table '
        f'class="rest"><thead><tr><th>rank</th><th>trial</th><th>status</th><th>step</th><th>{_e(metric)}</th>'
        f"<th>stop reason</th><th>run</th></tr></thead><tbody>{rows}</tbody></table></div>"
    )


def _csv_table(text: str, metric: str) -> str:
    """A CSV as an HTML table, the sweep metric moved beside the sampled values (leaderboard.csv
    lists metrics A-Z): the value the trials are ranked by (`judged_<metric>`, at each trial's
    best eval) where the CSV has it, else the last report's."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return '<p class="note">The leaderboard is empty.</p>'
    params = [j for j, c in enumerate(rows[0]) if c.startswith("param.")]
    if f"judged_{metric}" in rows[0]:
        metric = f"judged_{metric}"
    if metric in rows[0] and params:
        i = rows[0].index(metric)
        order = [j for j in range(len(rows[0])) if j != i]
        order.insert(order.index(params[-1]) + 1, i)
        rows = [[r[j] if j < len(r) else "" for j in order] for r in rows]
    head = "".join(f"<th>{_e(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{_e(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f'<table class="leaderboard"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _live_table(table: dict) -> str:
    metric = table["metric"]
    sampled = sorted({k for t in table["trials"] for k in t["sampled"]})
    rows = [["rank", "trial_id", "status", "step", *sampled, metric, "stop_reason"]]
    for i, t in enumerate(table["trials"], 1):
        rows.append(
            [
                i,
                t["trial_id"],
                t["status"],
                t["step"],
                *(t["sampled"].get(k, "") for k in sampled),
                t.get(metric, ""),
                t["stop_reason"] or "",
            ]
        )
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return _csv_table(buf.getvalue(), metric)


def _artifact(client: MlflowClient, run_id: str, path: str, tmp: str) -> Path:
    return Path(client.download_artifacts(run_id, path, dst_path=str(Path(tmp) / run_id)))


def _data_uri(path: Path) -> str:
    mime = {".png": "image/png", ".webp": "image/webp", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}.get(
        path.suffix.lower(), "application/octet-stream"
    )
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _fmt(v) -> str:
    """Numbers to 4 significant digits (CSV cells arrive as strings); everything else as is."""
    if v is None:
        return ""
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    if isinstance(v, str) and v.lstrip("-").isdigit():
        return v
    return f"{x:.4g}"


def _e(v) -> str:
    return html.escape(str(v), quote=True)


CSS = """
body{font-family:system-ui,sans-serif;margin:1.5rem auto;max-width:1280px;padding:0 1rem;color:#222}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
h3{margin:.2rem 0;font-size:1.05rem}.status{font-weight:normal;color:#555;font-size:.9rem}
.meta{color:#555;font-size:.85rem;margin:.2rem 0}.note{color:#666;font-style:italic}
.running{background:#fff4d6;border:1px solid #e6c35c;padding:.5rem .8rem;border-radius:4px}
.scroll{overflow-x:auto}table{border-collapse:collapse;font-size:.8rem}
th,td{border:1px solid #ddd;padding:.2rem .45rem;text-align:right;white-space:nowrap}th{background:#f4f4f4}
tbody tr:first-child{background:#eefbea}
.trial{border:1px solid #e3e3e3;border-radius:6px;padding:.6rem .8rem;margin:.8rem 0}
.row{display:flex;gap:1rem;align-items:flex-start}figure{margin:0}
.samples{flex:0 0 180px;text-align:center}.samples img{width:180px;image-rendering:pixelated}
.samples figcaption{font-size:.75rem;color:#555}.curves{flex:1;min-width:0}
svg{max-width:100%;height:auto}.contact-sheet{max-width:100%;image-rendering:pixelated}
code{font-size:.85em;background:#f4f4f4;padding:0 .2em}
"""
