"""A temporary local Prefect API server for runs without PREFECT_API_URL (the CLI and
`cleanset.clean`).

Prefect starts the same server itself on first use, but only then, and after importing its server
package: about 8 s of a 14 s run on small data. Starting the process first lets it boot while the
flow's libraries import. The command is the one Prefect's own SubprocessASGIServer runs.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def _die_with_parent() -> None:
    """Linux: have the kernel stop the server if the CLI process dies, even by SIGKILL."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wanted() -> bool:
    """True when no API is configured and Prefect would start a temporary server itself."""
    if os.environ.get("PREFECT_API_URL"):
        return False
    flag = os.environ.get("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE",
                          os.environ.get("PREFECT_SERVER_EPHEMERAL_ENABLED", "true"))
    return flag.lower() not in ("0", "false", "no")


class LocalServer:
    """A Prefect API server process on a free loopback port, stopped at exit."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        prefect_dir = Path(importlib.util.find_spec("prefect").origin).parent
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
               "PREFECT__SERVER_FINAL": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect_dir.parent), "--factory",
             "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port",
             str(self.port), "--log-level", "error", "--lifespan", "on"],
            env=env,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        atexit.register(self.stop)

    def wait(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f"the local Prefect server exited with code {code}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the local Prefect server did not answer within {timeout:.0f} s")

    def stop(self) -> None:
        """Send Prefect's queued logs and events, then stop the server."""
        if self.process.poll() is not None:
            return
        try:
            from prefect.events.worker import EventsWorker
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all(timeout=5)
            EventsWorker.drain_all(timeout=5)
        except Exception:  # noqa: BLE001 - best effort: never fail a finished run on shutdown
            pass
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


@contextmanager
def reporting_to(server: LocalServer | None, waiting: Callable[[], None] | None = None,
                 stop: bool = True) -> Iterator[None]:
    """Run the body with Prefect's API at `server` (None: the API already configured). Waits
    for the server to answer (calling `waiting` first, e.g. to say so), and stops it after the
    body unless `stop` is False (a server kept for the life of the process)."""
    if server is None:
        yield
        return
    try:
        if waiting is not None:
            waiting()
        server.wait()
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: server.url}):
            yield
    finally:
        if stop:
            server.stop()


_kept: LocalServer | None = None


def kept_server() -> LocalServer:
    """One server for the life of this process (a notebook's kernel): started on first use and
    stopped at exit, so a second run does not pay the server's start-up again."""
    global _kept
    if _kept is None or _kept.process.poll() is not None:
        _kept = LocalServer()
    return _kept
