"""The report's pure pieces: what a shared page may show and how its leaderboard reads."""

from orchestrator.format import redact_uri
from orchestrator.report import _csv_table


def test_tracking_uri_on_the_page_has_no_credentials():
    """A page is meant to be shared: a user:password in the tracking URI never reaches it."""
    assert redact_uri("https://alice:s3cret@mlflow.example.org:5000/path") == "https://mlflow.example.org:5000/path"
    assert redact_uri("https://mlflow.example.org/?token=abc") == "https://mlflow.example.org/"  # the page is shared
    assert redact_uri("sqlite:////tmp/ganops_runs/mlflow.db") == "sqlite:////tmp/ganops_runs/mlflow.db"


def test_leaderboard_table_puts_the_metric_beside_the_sampled_values_and_escapes_cells():
    """leaderboard.csv lists metrics A-Z; the table shows the sweep metric right after the params,
    cells HTML-escaped."""
    page = _csv_table("rank,trial_id,step,param.lr_g,d_x,fid\n1,<b>t</b>,6,0.000325,0.62,2614.24\n", "fid")
    heads = [h.split("</th>")[0] for h in page.split("<th>")[1:]]
    assert heads == ["rank", "trial_id", "step", "param.lr_g", "fid", "d_x"]
    assert "&lt;b&gt;t&lt;/b&gt;" in page and "<b>" not in page
    assert "<td>2614</td>" in page and "<td>0.000325</td>" in page
    # A sweep ranked by each trial's best eval: that value goes beside the sampled values.
    page = _csv_table("rank,trial_id,step,judged_step,judged_fid,param.lr_g,fid\n1,t,6,4,12.5,0.0003,20.1\n", "fid")
    heads = [h.split("</th>")[0] for h in page.split("<th>")[1:]]
    assert heads == ["rank", "trial_id", "step", "judged_step", "param.lr_g", "judged_fid", "fid"]


def _trials(n: int) -> list[dict]:
    return [
        {
            "trial_id": f"t_{i:05d}",
            "run_id": f"r{i:031d}",
            "status": "done",
            "step": 1000,
            "fid": 10.0 + i,
            "stop_reason": None,
            "sampled": {},
        }
        for i in range(n)
    ]


def test_trials_past_the_detailed_best_are_one_table_row_each():
    """Above DETAIL_TRIALS the page details the best and lists the others, ranked on, in one table."""
    from orchestrator.report import DETAIL_TRIALS, _rest_table

    page = _rest_table(_trials(DETAIL_TRIALS + 3), "fid")
    rows = page.split("<tbody>")[1].split("<tr")[1:]
    assert len(rows) == 3
    assert f"<td>{DETAIL_TRIALS + 1}</td><td>t_{DETAIL_TRIALS:05d}</td>" in rows[0]
    assert "The other 3 trials" in page and f'id="trial-t_{DETAIL_TRIALS + 2:05d}"' in rows[2]


def test_curves_draw_each_series_skip_non_finite_points_and_say_when_empty():
    """A trial's panels: one line and a marker per finite point, the equilibrium lines, 'no values yet' for an empty
    panel."""
    import math

    from orchestrator.report import _curves_svg

    svg = _curves_svg(
        {
            "loss_d": [(100, 1.3), (200, math.nan), (300, 1.4)],
            "loss_g": [(100, 0.7), (300, 0.69)],
            "fid": [(100, 90.0)],
        },
        "fid",
    )
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "nan" not in svg.lower()
    assert svg.count("no values yet") == 2  # D outputs, gradient norms
    assert (
        "D at equilibrium (2 ln 2)" in svg and svg.count('stroke-dasharray="2,3" fill="none"') == 2
    )  # 2 ln 2 and ln 2 (the empty panel draws none)
    assert svg.count("l2.5,-2.5") == 5  # markers: 2 + 2 + 1 finite points


def test_overview_names_the_best_trials_and_greys_the_rest():
    """Of many trials the overview names the best OVERVIEW_LABELS; every trial is still a line."""
    from orchestrator.report import OVERVIEW_LABELS, _overview_svg

    trials = _trials(OVERVIEW_LABELS + 30)
    hist = {t["run_id"]: {"fid": [(100, t["fid"] + 5), (200, t["fid"])]} for t in trials}
    svg = _overview_svg(trials, hist, "fid")
    assert "t_00000" in svg and f"t_{OVERVIEW_LABELS - 1:05d}" in svg and f"t_{OVERVIEW_LABELS:05d}" not in svg
    assert svg.count('stroke="#c8c8c8"') == 30 and "30 more in grey" in svg
