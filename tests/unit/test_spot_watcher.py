"""The spot-interruption watcher against a fake IMDSv2 on 127.0.0.1."""

import time

import pytest

from infra.aws.spot import InterruptionWatcher, instance_action, watcher_for_this_node
from infra.local_services import free_port
from tests.fake_imds import FakeImds


def test_instance_action_uses_a_session_token_and_reads_404_as_no_notice():
    with FakeImds() as imds:
        assert instance_action(imds.url) is None
        assert imds.token_requests == 1 and imds.polls == 1  # IMDSv2: token first, then the read
        imds.arm("stop")
        assert instance_action(imds.url) == {"action": "stop", "time": "2026-11-23T20:00:00Z"}


def test_unreachable_metadata_service_raises_oserror():
    with pytest.raises(OSError):
        instance_action(f"http://127.0.0.1:{free_port()}", timeout=0.5)


def test_watcher_sets_its_event_once_a_notice_appears_and_stops_polling():
    with FakeImds() as imds:
        w = InterruptionWatcher(imds.url, interval=0.05).start()
        time.sleep(0.3)
        assert not w.noticed.is_set() and imds.polls >= 2
        imds.arm()
        assert w.noticed.wait(5)
        assert w.notice["action"] == "terminate"
        polls = imds.polls
        time.sleep(0.3)
        assert imds.polls == polls  # done: one notice is all a node gets


def test_watch_only_on_spot_nodes_or_where_an_endpoint_is_set(monkeypatch):
    monkeypatch.delenv("GANOPS_IMDS_ENDPOINT", raising=False)
    assert watcher_for_this_node({}) is None
    assert watcher_for_this_node({"ganops.io/market": "on-demand"}) is None
    with FakeImds() as imds:
        monkeypatch.setenv("GANOPS_IMDS_ENDPOINT", imds.url)
        monkeypatch.setenv("GANOPS_IMDS_POLL_S", "0.05")
        w = watcher_for_this_node({})
        assert w is not None and w.endpoint == imds.url
        imds.arm()
        assert w.noticed.wait(5)
