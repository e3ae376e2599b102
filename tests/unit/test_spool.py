"""A trial's MLflow writes while the tracking server is away (trainers/spool.py), against a real
`mlflow server` stopped and started again on its port and database: nothing is lost, the order
holds, the closing status comes last, a refused write still raises, and the spool is bounded."""

import uuid

import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from infra.local_services import RestartableMlflowServer
from trainers.spool import Spool, is_outage, pending, replay_all
from trainers.trial_log import MlflowSink

pytestmark = [pytest.mark.timeout(400), pytest.mark.slow]  # a real mlflow server started 2x per test


@pytest.fixture(scope="module")
def module_server(tmp_path_factory):
    """One real server for the module (each start costs ~15 s here); each test its own experiment."""
    s = RestartableMlflowServer(tmp_path_factory.mktemp("mlflow"), workers=1)
    s.up()
    yield s
    s.down()


@pytest.fixture
def server(module_server, monkeypatch):
    """The module's server, up; `server.down()` stops it, `server.up()` starts it again on its port."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail at once, not after MLflow's ~4 min
    monkeypatch.setenv("GANOPS_SPOOL_RETRY_S", "0")
    if module_server.svc is None:  # a test that failed while it was down
        module_server.up()
    return module_server


def _run(url: str) -> str:
    c = MlflowClient(url)
    return c.create_run(c.create_experiment(f"spool-{uuid.uuid4().hex[:8]}")).info.run_id


def _grid() -> np.ndarray:
    return (np.arange(16 * 16, dtype=np.uint8).reshape(16, 16) * 7) % 255


def _check_everything_there(url: str, run_id: str, steps: list[int]) -> None:
    c = MlflowClient(url)
    assert [m.step for m in c.get_metric_history(run_id, "fid")] == steps
    assert [m.value for m in c.get_metric_history(run_id, "fid")] == [float(s) for s in steps]
    images = [a.path for a in c.list_artifacts(run_id, "images")]
    assert len([p for p in images if p.endswith(".png")]) == len(steps), images
    assert [a.path for a in c.list_artifacts(run_id, "generator")] == ["generator/generator.pt"]
    assert c.get_run(run_id).data.tags["ganops.device"] == "cpu"


def test_writes_while_the_server_is_away_are_kept_and_uploaded_in_order_when_it_is_back(server, tmp_path):
    run_id = _run(server.url)
    gen = tmp_path / "generator.pt"
    gen.write_bytes(b"weights" * 100)
    sink = MlflowSink(server.url, run_id, str(tmp_path / "spool"))
    sink.log(2, {"fid": 2.0}, _grid(), None)
    server.down()
    sink.tag("ganops.device", "cpu")  # none of these raise: they are kept
    sink.log_losses(3, {"loss_d": 0.5})
    sink.log(4, {"fid": 4.0}, _grid(), gen)
    sink.flush()
    assert sink.spool is not None and sink.spool.offline
    assert pending(str(tmp_path / "spool")) >= 4
    server.up()
    sink.log(6, {"fid": 6.0}, _grid(), None)  # uploads what was kept first, then this
    sink.close()
    assert not sink.spool.offline and pending(str(tmp_path / "spool")) == 0
    _check_everything_there(server.url, run_id, [2, 4, 6])
    assert [m.step for m in MlflowClient(server.url).get_metric_history(run_id, "loss_d")] == [3]


def test_a_server_that_stays_away_gets_everything_with_the_closing_last_from_replay(server, tmp_path):
    run_id = _run(server.url)
    root = str(tmp_path / "spool")
    gen = tmp_path / "generator.pt"
    gen.write_bytes(b"weights" * 100)
    server.down()
    sink = MlflowSink(server.url, run_id, root)
    sink.tag("ganops.device", "cpu")
    for step in (2, 4):
        sink.log(step, {"fid": float(step)}, _grid(), gen if step == 4 else None)
    sink.close()  # the worker's end: the server is still away, so everything stays kept
    driver = Spool(MlflowClient(server.url), server.url, run_id, root)
    assert driver.offline  # the trial driver sees the worker's kept writes ...
    driver.keep({"op": "close", "status": "FINISHED", "reason": None})  # ... and closes behind them
    assert replay_all(MlflowClient(server.url), root) == (0, pending(root))  # still away: nothing taken
    kept = pending(root)
    assert kept == 7  # the tag, 2 batches, 2 images, the generator and the closing
    server.up()
    assert replay_all(MlflowClient(server.url), root) == (kept, 0)
    _check_everything_there(server.url, run_id, [2, 4])
    assert MlflowClient(server.url).get_run(run_id).info.status == "FINISHED"


def test_a_write_mlflow_refuses_still_raises_and_keeps_nothing(server, tmp_path):
    sink = MlflowSink(server.url, "0" * 32, str(tmp_path / "spool"))  # no such run
    with pytest.raises(MlflowException):
        sink.log(2, {"fid": 2.0}, None, None)
    assert pending(str(tmp_path / "spool")) == 0


def test_the_spool_is_bounded_and_says_how_much_it_dropped(server, tmp_path, monkeypatch):
    monkeypatch.setenv("GANOPS_SPOOL_MAX_MB", "0.01")  # ~10 kB
    run_id = _run(server.url)
    root = str(tmp_path / "spool")
    server.down()
    sink = MlflowSink(server.url, run_id, root)
    for step in range(1, 101):
        sink.log_losses(step, {"loss_d": float(step)})
    assert sink.spool is not None
    kept = sink.spool.kept
    assert 0 < kept < 100 and sink.spool.dropped == 100 - kept
    server.up()
    sink.close()
    c = MlflowClient(server.url)
    assert len(c.get_metric_history(run_id, "loss_d")) == kept
    assert c.get_run(run_id).data.tags["ganops.spool_dropped"] == str(100 - kept)


def test_a_busy_store_is_an_outage_not_a_refusal():
    """SQLite's lock timeout and a server's exhausted connection pool (an HTTP 400 from
    SQLAlchemy, met by bench/tracking_load.py) are kept and retried, not dropped."""
    from mlflow.protos.databricks_pb2 import BAD_REQUEST, INVALID_PARAMETER_VALUE

    pool = MlflowException("QueuePool limit of size 5 overflow 10 reached, connection timed out", BAD_REQUEST)
    assert is_outage(pool) and is_outage(MlflowException("(sqlite3.OperationalError) database is locked"))
    assert not is_outage(MlflowException("Invalid value for metric", INVALID_PARAMETER_VALUE))
    assert not is_outage(MlflowException("Bad request", BAD_REQUEST))


def test_trial_run_waits_out_a_locked_sqlite_store(tmp_path):
    """A trial whose run cannot be created because another writer holds SQLite's lock past its
    timeout asks again, and gets its run once the lock is released (one run, not two)."""
    import sqlite3
    import threading
    import time

    from orchestrator import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("busy")
    parent = client.create_run(exp).info.run_id
    lock = sqlite3.connect(tmp_path / "mlflow.db", check_same_thread=False)  # released from a timer thread
    lock.execute("BEGIN EXCLUSIVE")  # another writer, holding the lock past SQLite's timeout
    threading.Timer(8.0, lock.rollback).start()
    started = time.monotonic()
    args = (client, exp, parent, "sweep-busy", "t_00000", "t_00000", "h", {"lr_g": 1e-3}, {"lr_g": 1e-3})
    rid = tracking.trial_run(*args)
    assert time.monotonic() - started >= 7.5  # it did wait for the lock
    assert tracking.trial_run(*args) == rid  # found again, not created twice
    lock.close()


def test_a_restarted_trial_waits_out_a_locked_store_to_learn_what_it_logged(tmp_path):
    """The reads that tell a (re)started trial what its run holds already cannot be spooled:
    under SQLite's lock they are asked again until the store answers, not raised (which failed
    the trial's start: bench/tracking_load.py at 200 trials on the server, HTTP 400 QueuePool)."""
    import sqlite3
    import threading
    import time

    from mlflow.entities import Metric

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    rid = client.create_run(client.create_experiment("busy")).info.run_id
    client.log_batch(rid, metrics=[Metric("step", 500, 0, 500), Metric("step", 1000, 0, 1000)])
    sink = MlflowSink(uri, rid, str(tmp_path / "spool"))
    # Held past MLflow's SQLite busy timeout (20 s), so a read fails with "database is locked".
    lock = sqlite3.connect(tmp_path / "mlflow.db", check_same_thread=False)
    lock.execute("BEGIN EXCLUSIVE")
    threading.Timer(24.0, lock.rollback).start()
    started = time.monotonic()
    sink.resume_after(0)
    assert time.monotonic() - started >= 23.5  # it did wait
    assert sink.logged_through == 1000
    lock.close()


def test_an_image_written_again_after_a_lost_answer_is_not_duplicated(tmp_path):
    """A write whose answer was lost (the server took the upload, then went away) is kept and
    replayed: the replayed image overwrites the first upload, in MLflow's own layout (full PNG
    and compressed WebP named key+step+N+timestamp+T+id, the run tagged as having images)."""
    import io

    from PIL import Image

    from trainers.spool import apply, image_name

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("images", artifact_location=(tmp_path / "artifacts").as_uri())
    rid = client.create_run(exp).info.run_id
    buf = io.BytesIO()
    Image.fromarray(_grid()).save(buf, format="PNG")
    op = {"op": "image", "key": "samples", "step": 500, "name": image_name("samples", 500)}
    apply(client, rid, op, buf.getvalue())
    apply(client, rid, op, buf.getvalue())  # the replay
    files = sorted(a.path for a in client.list_artifacts(rid, "images"))
    assert files == [f"images/{op['name']}+compressed.webp", f"images/{op['name']}.png"], files
    assert op["name"].startswith("samples+step+500+timestamp+")
    assert client.get_run(rid).data.tags["mlflow.loggedImages"] == "True"
    with open(client.download_artifacts(rid, f"images/{op['name']}.png", str(tmp_path)), "rb") as f:
        assert (np.asarray(Image.open(f)) == _grid()).all()


def test_trial_run_found_again_gets_the_params_a_busy_store_lost(tmp_path):
    """A first attempt that created the trial's run and then lost its params write to a busy
    store (bench/tracking_load.py at 200 trials: 1,504 params lost) is finished by the retry,
    which finds the run: every param is there, once."""
    from orchestrator import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("busy")
    parent = client.create_run(exp).info.run_id
    cfg = {"lr_g": 1e-3, "lr_d": 4e-4, "params": {"width": 8}}
    tags = {tracking.TAG_TRIAL: "t_00000", tracking.TAG_SWEEP: "sweep-busy", tracking.TAG_KIND: "trial"}
    first = client.create_run(exp, tags=tags).info.run_id  # the params write never landed
    client.log_batch(first, params=[p for p in tracking._params(cfg) if p.key == "lr_g"])  # or only part of it
    rid = tracking.trial_run(client, exp, parent, "sweep-busy", "t_00000", "t_00000", "h", cfg, {"lr_g": 1e-3})
    assert rid == first
    assert client.get_run(rid).data.params == {"lr_g": "0.001", "lr_d": "0.0004", "params.width": "8"}
