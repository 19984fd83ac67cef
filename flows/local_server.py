"""A temporary local Prefect API server for runs without PREFECT_API_URL (the CLI and
`cleanset.clean`).

Prefect starts the same server itself on first use, but only then, and after importing its server
package: about 8 s of a 14 s run on small data. Starting the process first lets it boot while the
flow's libraries import. The command is the one Prefect's own SubprocessASGIServer runs.

The CLI's server outlives its run (`shared_server`): the next `cleanset run` within
CLEANSET_SERVER_KEEP seconds (default 600) reports to it instead of booting one, and it exits by
itself once no client has talked to it for that long. Booting the server costs ~7.5 s of CPU
(importing Prefect's server package, most of it), paid beside the flow's own imports on a
2-core machine; `CLEANSET_SERVER_KEEP=0` restores one server per run.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import json
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


def _server_env() -> dict[str, str]:
    return {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1"}


def drain() -> None:
    """Send Prefect's queued logs and events (best effort: never fail a finished run). Only
    workers this process started have anything queued: nothing is imported for this."""
    for module, worker in (("prefect.logging.handlers", "APILogWorker"),
                           ("prefect.events.worker", "EventsWorker")):
        try:
            cls = getattr(sys.modules.get(module), worker, None)
            if cls is not None:
                cls.drain_all(timeout=5)
        except Exception:  # noqa: BLE001
            pass


def healthy(url: str, timeout: float, process: subprocess.Popen | None = None) -> bool:
    """Whether the API at `url` answers its health check within `timeout` seconds; raises when
    `process` (the server's, if this process started it) exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the local Prefect server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(0.1)
    return False


class LocalServer:
    """A Prefect API server process on a free loopback port, stopped at exit."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        prefect_dir = Path(importlib.util.find_spec("prefect").origin).parent
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect_dir.parent), "--factory",
             "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port",
             str(self.port), "--log-level", "error", "--lifespan", "on"],
            env=_server_env(),
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        atexit.register(self.stop)

    def wait(self, timeout: float = 60.0) -> None:
        if not healthy(self.url, timeout, self.process):
            raise RuntimeError(f"the local Prefect server did not answer within {timeout:.0f} s")

    def stop(self) -> None:
        """Send Prefect's queued logs and events, then stop the server."""
        if self.process.poll() is not None:
            return
        drain()
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


KEEP_ENV = "CLEANSET_SERVER_KEEP"
DEFAULT_KEEP = 600.0


def keep_seconds() -> float:
    """How long the CLI's server waits idle for the next run (CLEANSET_SERVER_KEEP; 0: none)."""
    raw = os.environ.get(KEEP_ENV, "").strip()
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_KEEP
    except ValueError:
        return DEFAULT_KEEP


def state_file() -> Path:
    """Where the shared server of this interpreter and these Prefect settings is recorded
    (under PREFECT_HOME): one per Python executable, Prefect version, PREFECT_* setting (but
    the logging ones: `--verbose` only changes this process's console) and working folder, so
    a run never reports to a server of another environment, database or settings file."""
    from importlib.metadata import version

    home = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
    settings = sorted((k, v) for k, v in os.environ.items() if k.startswith("PREFECT_")
                      and k != "PREFECT_API_URL" and not k.startswith("PREFECT_LOGGING_"))
    # the folder too: Prefect also reads settings from ./prefect.toml and ./pyproject.toml
    key = hashlib.sha256(json.dumps([sys.executable, version("prefect"), settings,
                                     os.getcwd()]).encode())
    return home / f"cleanset-server-{key.hexdigest()[:12]}.json"


def _alive(pid: int) -> bool:
    """The process exists and (where /proc tells) is a shared server of ours."""
    try:
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            return b"--serve-idle" in cmdline.read_bytes()
        except OSError:
            return False
    return True


class SharedServer(LocalServer):
    """The CLI's server, kept for the next run: an answering one recorded in state_file() is
    reused; otherwise one is started in its own session (it outlives this process and stops
    itself after keep_seconds() without a client). Stopping it only sends this process's queued
    logs and events."""

    def __init__(self, keep: float) -> None:
        from filelock import FileLock

        path = state_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock", timeout=30):
            known = _read_state(path)
            if known and _alive(known["pid"]):
                self.port, self.process, self.reused = known["port"], None, True
            else:
                self.port, self.reused = _free_port(), False
                log = open(path.with_suffix(".log"), "ab")  # noqa: SIM115 - the child owns it
                self.process = subprocess.Popen(
                    [sys.executable, "-m", __name__, "--serve-idle", str(keep), "--port",
                     str(self.port)],
                    env=_server_env(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    start_new_session=True)
                log.close()
                path.write_text(json.dumps({"pid": self.process.pid, "port": self.port}))
        self.url = f"http://127.0.0.1:{self.port}/api"
        atexit.register(self.stop)

    def wait(self, timeout: float = 60.0) -> None:
        if self.process is not None:
            return super().wait(timeout)
        if not healthy(self.url, timeout):  # a reused server may still be booting
            raise RuntimeError(f"the local Prefect server at {self.url} did not answer within "
                               f"{timeout:.0f} s; CLEANSET_SERVER_KEEP=0 starts one per run")

    def stop(self) -> None:
        drain()


def _read_state(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
        return {"pid": int(data["pid"]), "port": int(data["port"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def cli_server() -> LocalServer | None:
    """The server a CLI run reports to: None when an API is configured, else the shared
    server (a server of its own when CLEANSET_SERVER_KEEP=0)."""
    if not wanted():
        return None
    keep = keep_seconds()
    return SharedServer(keep) if keep > 0 else LocalServer()


def stop_shared_server() -> bool:
    """Stop the shared server of this environment, if one runs (benchmarks, tests)."""
    path = state_file()
    known = _read_state(path)
    if not known or not _alive(known["pid"]):
        return False
    import signal

    os.kill(known["pid"], signal.SIGTERM)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _alive(known["pid"]):
        time.sleep(0.1)
    return True


class _Activity:
    """ASGI wrapper counting the requests and websockets in flight and when the last ended."""

    def __init__(self, app) -> None:  # noqa: ANN001
        self.app, self.active, self.last = app, 0, time.monotonic()

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        self.active += 1
        try:
            return await self.app(scope, receive, send)
        finally:
            self.active -= 1
            self.last = time.monotonic()


def _serve_idle(port: int, idle: float) -> None:
    """The shared server's process: Prefect's API app (as its SubprocessASGIServer runs it),
    stopped once nothing has been in flight for `idle` seconds."""
    import asyncio

    import uvicorn
    from prefect.server.api.server import create_app

    app = _Activity(create_app(ephemeral=True, final=True))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error",
                                           lifespan="on"))

    async def watchdog() -> None:
        while not server.started and not server.should_exit:  # idle counts from the start
            await asyncio.sleep(0.1)
        app.last = time.monotonic()
        while not server.should_exit:
            await asyncio.sleep(min(5.0, idle / 4))
            if app.active == 0 and time.monotonic() - app.last > idle:
                server.should_exit = True

    async def main() -> None:
        await asyncio.gather(server.serve(), watchdog())

    asyncio.run(main())


if __name__ == "__main__":
    _args = sys.argv[1:]
    _serve_idle(int(_args[_args.index("--port") + 1]),
                float(_args[_args.index("--serve-idle") + 1]))
