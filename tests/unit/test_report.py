"""The report's pure pieces: what a shared page may show and how its leaderboard reads."""

from orchestrator.report import _csv_table, _safe_uri


def test_tracking_uri_on_the_page_has_no_credentials():
    """A page is meant to be shared: a user:password in the tracking URI never reaches it."""
    assert _safe_uri("https://alice:s3cret@mlflow.example.org:5000/path") == "https://mlflow.example.org:5000/path"
    assert _safe_uri("sqlite:////tmp/ganops_runs/mlflow.db") == "sqlite:////tmp/ganops_runs/mlflow.db"


def test_leaderboard_table_puts_the_metric_beside_the_sampled_values_and_escapes_cells():
    """leaderboard.csv lists metrics A-Z; the table shows the sweep metric right after the params, cells HTML-escaped."""
    page = _csv_table("rank,trial_id,step,param.lr_g,d_x,fid\n1,<b>t</b>,6,0.000325,0.62,2614.24\n", "fid")
    heads = [h.split("</th>")[0] for h in page.split("<th>")[1:]]
    assert heads == ["rank", "trial_id", "step", "param.lr_g", "fid", "d_x"]
    assert "&lt;b&gt;t&lt;/b&gt;" in page and "<b>" not in page
    assert "<td>2614</td>" in page and "<td>0.000325</td>" in page
