"""One self-contained HTML page per sweep, to read or mail without an MLflow server.

Built from what MLflow holds, so it works on a finished sweep and on a running one: the
leaderboard and contact sheet of the sweep's run (written when the sweep ends), then per
trial its newest sample grid and its loss / balance / metric curves. Images are inlined as
data: URIs and the curves as SVG drawn by matplotlib (already installed: mlflow requires
it), so the page loads nothing from anywhere.
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
from urllib.parse import urlsplit, urlunsplit

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from orchestrator.compare import CompareError, compare
from orchestrator.contact_sheet import trial_images

LN2 = math.log(2)


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
        raise ReportError(f"no sweep {sweep!r} in {_safe_uri(tracking_uri)}; pass the sweep id the leaderboard prints (name-YYYYmmdd-HHMMSS) or its MLflow run id") from None
    parent = client.get_run(table["parent_run_id"])
    page = render(client, parent, table, _safe_uri(tracking_uri))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
    except OSError as e:
        raise ReportError(f"cannot write the report to {out}: {e.strerror}; pass a writable file with --out") from None
    return {"path": str(out.resolve()), "trials": len(table["trials"]), "sweep_id": table["sweep_id"], "status": table["status"]}


def render(client: MlflowClient, parent, table: dict, uri: str) -> str:
    """The page: header, leaderboard, contact sheet, every trial's metric, then one block per trial."""
    metric, trials, status = table["metric"], table["trials"], table["status"]
    with tempfile.TemporaryDirectory() as tmp:
        files = {a.path for a in client.list_artifacts(parent.info.run_id)}
        board = _artifact(client, parent.info.run_id, "leaderboard.csv", tmp) if "leaderboard.csv" in files else None
        sheet = _artifact(client, parent.info.run_id, "contact_sheet.png", tmp) if "contact_sheet.png" in files else None
        histories = {t["run_id"]: _histories(client, t["run_id"], metric) for t in trials}
        blocks = [_trial_block(client, i, t, metric, histories[t["run_id"]], tmp) for i, t in enumerate(trials, 1)]
        missing = "the sweep is still running; it is written when the sweep ends" if status == "RUNNING" else f"the sweep ended {status} without writing it"
        sheet_missing = ("the sweep draws it when its first trial ends, then refreshes it as it runs" if status == "RUNNING"
                         else f"the sweep ended {status} without drawing it")
        leaderboard = (_csv_table(board.read_text(encoding="utf-8"), metric) if board else
                       f'<p class="note">No leaderboard yet: {missing}. Standings from MLflow now:</p>{_live_table(table)}')
        contact = (f'<img class="contact-sheet" alt="contact sheet" src="{_data_uri(sheet)}">'
                   '<p class="note">Rows: trials, best first. Columns: eval steps. Every cell is drawn from the same fixed noise.</p>'
                   if sheet else f'<p class="note">No contact sheet yet: {sheet_missing}. Each trial\'s newest samples are below.</p>')
    overview = _overview_svg(trials, histories, metric) if any(histories[t["run_id"]].get(metric) for t in trials) else '<p class="note">No trial has reported yet.</p>'
    sweep_id = table["sweep_id"] or parent.info.run_id
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    banner = (f'<p class="running">This sweep is still running: {len(trials)} trial(s) so far. The page shows what MLflow held at {when}; '
              f'run <code>ganops report {_e(sweep_id)}</code> again for more.</p>' if status == "RUNNING" else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ganops report: {_e(sweep_id)}</title><style>{CSS}</style></head>
<body>
<header><h1>Sweep {_e(sweep_id)}</h1>
<p class="meta">status <b>{_e(status)}</b> &middot; {len(trials)} trial(s) &middot; ranked by <b>{_e(metric)}</b> ({_e(table["mode"])}) &middot;
MLflow run <code>{_e(parent.info.run_id)}</code> in {_e(uri)} &middot; generated {when}</p>{banner}</header>
<section id="leaderboard"><h2>Leaderboard</h2><div class="scroll">{leaderboard}</div></section>
<section id="contact-sheet"><h2>Contact sheet</h2>{contact}</section>
<section id="overview"><h2>{_e(metric)} of every trial</h2><figure class="overview">{overview}</figure></section>
<section id="trials"><h2>Trials, best first</h2>{"".join(blocks) or '<p class="note">No trial has started yet.</p>'}</section>
</body></html>
"""


def _trial_block(client: MlflowClient, rank: int, t: dict, metric: str, hist: dict, tmp: str) -> str:
    """A trial's newest sample grid beside its curves."""
    images = trial_images(client, t["run_id"])
    if images:
        step = max(images)
        path = _artifact(client, t["run_id"], images[step], tmp)
        samples = f'<figure class="samples"><img alt="samples at step {step}" src="{_data_uri(path)}"><figcaption>samples at step {step}</figcaption></figure>'
    else:
        samples = '<figure class="samples"><p class="note">no samples yet (logged at the first eval)</p></figure>'
    stop = f" &middot; stopped: {_e(t['stop_reason'])}" if t.get("stop_reason") else ""
    sampled = ", ".join(f"{_e(k)} = {_e(_fmt(v))}" for k, v in sorted(t["sampled"].items())) or "no sampled values"
    value = t.get(metric)
    return (f'<article class="trial" id="trial-{_e(t["trial_id"] or t["run_id"])}">'
            f'<h3>#{rank} {_e(t["trial_id"] or t["run_id"])} <span class="status">{_e(t["status"])} at step {t["step"]}{stop}</span></h3>'
            f'<p class="meta">{sampled} &middot; {_e(metric)} = {_e(_fmt(value)) if value is not None else "-"} &middot; run <code>{_e(t["run_id"])}</code></p>'
            f'<div class="row">{samples}<figure class="curves">{_curves_svg(hist, metric)}</figure></div></article>')


def _panels(metric: str) -> list[tuple[str, tuple[str, ...], dict[float, str]]]:
    """(title, metric keys, reference lines): the balance a person reads off a GAN's curves."""
    return [
        ("losses", ("loss_d", "loss_g"), {2 * LN2: "D at equilibrium (2 ln 2)", LN2: "G at equilibrium (ln 2)"}),
        ("D outputs", ("d_x", "d_g_z"), {0.5: "equilibrium (0.5)"}),
        ("gradient norms", ("grad_norm_d", "grad_norm_g"), {}),
        (metric, (metric,), {}),
    ]


def _histories(client: MlflowClient, run_id: str, metric: str) -> dict[str, list[tuple[int, float]]]:
    keys = {k for _, ks, _ in _panels(metric) for k in ks}
    return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in keys}


def _curves_svg(hist: dict, metric: str) -> str:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(12, 2.5), layout="constrained")
    for ax, (title, keys, refs) in zip(fig.subplots(1, 4), _panels(metric)):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        drawn = [k for k in keys if hist.get(k)]
        for k in drawn:
            ax.plot(*zip(*hist[k]), marker="o", markersize=3, label=k)
        if not drawn:
            ax.text(0.5, 0.5, "no values yet", ha="center", va="center", transform=ax.transAxes, color="grey")
            continue
        for y, label in refs.items():
            ax.axhline(y, color="grey", linestyle=":", linewidth=1, label=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=6, loc="best")
    return _svg(fig)


def _overview_svg(trials: list[dict], histories: dict, metric: str) -> str:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(9, 3.2), layout="constrained")
    ax = fig.subplots()
    for t in trials:
        if points := histories[t["run_id"]].get(metric):
            ax.plot(*zip(*points), marker="o", markersize=3, label=t["trial_id"] or t["run_id"][:8])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step", fontsize=8)
    ax.set_ylabel(metric, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _svg(fig)


def _svg(fig) -> str:
    """The figure as an <svg> element to inline: text stays text (no glyph outlines), no XML prolog."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _csv_table(text: str, metric: str) -> str:
    """A CSV as an HTML table, the sweep metric moved beside the sampled values (leaderboard.csv lists metrics A-Z)."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return '<p class="note">The leaderboard is empty.</p>'
    params = [j for j, c in enumerate(rows[0]) if c.startswith("param.")]
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
        rows.append([i, t["trial_id"], t["status"], t["step"], *(t["sampled"].get(k, "") for k in sampled), t.get(metric, ""), t["stop_reason"] or ""])
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return _csv_table(buf.getvalue(), metric)


def _artifact(client: MlflowClient, run_id: str, path: str, tmp: str) -> Path:
    return Path(client.download_artifacts(run_id, path, dst_path=str(Path(tmp) / run_id)))


def _data_uri(path: Path) -> str:
    mime = {".png": "image/png", ".webp": "image/webp", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}.get(path.suffix.lower(), "application/octet-stream")
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


def _safe_uri(uri: str) -> str:
    """The tracking URI without a user:password part: the page may be shared."""
    parts = urlsplit(uri)
    if parts.password or parts.username:
        return urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))
    return uri


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
