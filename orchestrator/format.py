"""How numbers and sweep events read as plain text: table cells, and the progress lines a sweep
writes when stderr is a file or a CI log rather than a terminal; and what text from outside ganops
(MLflow tags, trial errors, ids typed on the command line) must look like before it is shown or
used. Pure functions, no Ray."""

from __future__ import annotations

import math
import re
from typing import Any

from rich.markup import escape

# A sweep id (as `ganops sweep` makes it: name-YYYYmmdd-HHMMSS), an MLflow run id (32 hex) or a
# Ray trial id (3f2a1_00004): ids reach MLflow filter strings (a quote broke them) and storage
# paths (`..` left the storage root), so only these characters, and no `..`.
SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")  # fullmatch: `$` would let a newline end it
ID_HELP = "letters, digits and _.- only (at most 200, no '..'), starting with a letter or digit"

# Whole terminal escape sequences (CSI colours and cursor moves, OSC 8 hyperlinks and window
# titles, 7-bit and C1 forms), then any control character left, and the bidi overrides that make
# a terminal show text in another order than it is.
_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"  # CSI: ESC [ params final
    r"|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"  # OSC: ESC ] ... BEL or ST
    r"|\x1b[@-_]?"  # any other ESC sequence, or a lone ESC
)
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_BREAKS = re.compile(r"[\t\n]")  # \r is a control: gone already


def redact_uri(uri: str) -> str:
    """`uri` as it may be printed: no user:password@ and no ?query (a token may be either)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(uri)
        host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    except ValueError:  # a netloc urllib cannot read (an unclosed [, a port that is not a number)
        return uri.split("?", 1)[0].rsplit("@", 1)[-1]
    if not parts.netloc:
        return uri.split("?", 1)[0]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def is_safe_id(ident: str) -> bool:
    """`ident` is a sweep, run or trial id ganops can look up (SAFE_ID, no `..`)."""
    return bool(SAFE_ID.fullmatch(ident)) and ".." not in ident


def plain_text(value: Any, *, keep_newlines: bool = False) -> str:
    """`value` as text a terminal shows as written: escape sequences and control characters
    dropped (an ESC from an MLflow tag could recolour, move the cursor or plant a hyperlink),
    tabs and line breaks made spaces (one event, one line) unless `keep_newlines`."""
    text = _CONTROLS.sub("", _ESCAPES.sub("", str(value)))
    return text if keep_newlines else _BREAKS.sub(" ", text)


def safe_text(value: Any, *, keep_newlines: bool = False) -> str:
    """`plain_text` with rich markup escaped: for every string from MLflow, a trial or the
    command line that rich prints with markup on (table cells, `Console.print`): `[/oops]`
    crashed `ganops compare`, and `[link=...]` rendered as a hyperlink."""
    return escape(plain_text(value, keep_newlines=keep_newlines))


STATES = ("pending", "running", "done", "stopped", "failed")


def fmt(v: Any) -> str:
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.3g}" if (abs(v) < 1e-2 or abs(v) >= 1e4) and v != 0 else f"{v:.4g}"
    return str(v)


def event_line(
    elapsed_s: float,
    trial_id: str,
    event: str,
    *,
    step: int | None = None,
    steps: int | None = None,
    metric: str | None = None,
    value: Any = None,
    detail: str | None = None,
) -> str:
    """One trial event as one line, e.g. `[  45s] trial 3f2a1_00000 eval step 200/1000: fid 87.3`.

    `event`: started, eval, done, stopped or failed; `detail`: the sampled values (started), the
    stop reason (stopped) or the error (failed)."""
    where = "" if step is None else f" step {step}" + (f"/{steps}" if steps else "")
    if event in ("done", "stopped", "failed") and where:
        where = " at" + where
    parts = [
        p for p in (f"{metric} {fmt(value)}" if metric is not None and value is not None else "", detail or "") if p
    ]
    return f"[{elapsed_s:5.0f}s] trial {trial_id} {event}{where}" + (": " + "; ".join(parts) if parts else "")


def summary_line(elapsed_s: float, counts: dict[str, int], metric: str, best: tuple[str, float] | None) -> str:
    """The sweep's state in one line, e.g. `[  30s] sweep: 2 running, 3 done, ...; best fid 45.2 (3f2a1_00004)`."""
    states = ", ".join(f"{counts.get(s, 0)} {s}" for s in ("running", "done", "stopped", "failed", "pending"))
    return f"[{elapsed_s:5.0f}s] sweep: {states}; best {metric} " + (f"{fmt(best[1])} ({best[0]})" if best else "-")
