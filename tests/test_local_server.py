"""The CLI's shared local Prefect server: reused by the next run, gone once idle."""

from __future__ import annotations

import pytest

from flows.local_server import SharedServer, _alive, cli_server, keep_seconds, state_file


@pytest.mark.slow
def test_the_shared_server_is_reused_then_stops_itself_when_idle(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))  # its own database and state file
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("CLEANSET_SERVER_KEEP", "4")
    first = cli_server()
    assert isinstance(first, SharedServer) and not first.reused
    try:
        first.wait(timeout=300)
        assert state_file().parent == tmp_path
        second = SharedServer(keep_seconds())
        second.wait(timeout=5)
        assert second.reused and second.url == first.url
        first.process.wait(timeout=120)  # nothing talks to it: it stops by itself
        assert first.process.returncode == 0
        third = SharedServer(keep_seconds())  # recorded but gone: a new one
        assert not third.reused and third.port != first.port
        third.process.terminate()
        third.process.wait(timeout=60)
        assert not _alive(third.process.pid)
    finally:
        if first.process.poll() is None:
            first.process.kill()


def test_keep_seconds_reads_the_setting(monkeypatch):
    monkeypatch.setenv("CLEANSET_SERVER_KEEP", "0")
    assert keep_seconds() == 0
    monkeypatch.setenv("CLEANSET_SERVER_KEEP", "90")
    assert keep_seconds() == 90
    monkeypatch.setenv("CLEANSET_SERVER_KEEP", "soon")
    assert keep_seconds() == 600
    monkeypatch.delenv("CLEANSET_SERVER_KEEP")
    assert keep_seconds() == 600
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:1/api")
    assert cli_server() is None  # an API is configured: no local server at all
