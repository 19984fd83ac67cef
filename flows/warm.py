"""A warm process for the next `cleanset run` / `cleanset demo` (issue 18, fixed cost).

Most of a small run's seconds are imports: on a 1,000-row CSV (bench/fixed_cost.py) a first run
from the shell spent ~5 s importing Prefect, scikit-learn, pandas and cleanlab before its flow, and
inside the flow ~2.3 s more importing Great Expectations (validate) and ~1 s matplotlib (report),
of a ~20 s run. Every run paid them again. So, after a `run` or `demo` command, the CLI leaves one
process behind that imports those libraries while the user reads the summary and then waits
(CLEANSET_SERVER_KEEP seconds, default 600, as the shared Prefect server) for the next such
command. That command, instead of importing everything again, hands the waiting process its
arguments, working folder, environment and its terminal (stdin, stdout and stderr themselves, as
file descriptors over a Unix socket), and exits with that process's exit code: the run is the
same CLI code, the same Prefect flow, task states and UI, writing to the same terminal.

Rules that keep it safe:
- one process serves one command, then exits (no state, memory or open file carries over from
  one run to the next); each command leaves the next waiting process behind it;
- a waiting process serves only a command from the same Python, the same cleanset code (path,
  size and modification time of every file of the `flows` and `tasks` packages), the same
  installed packages (the site-packages folder's modification time), the same working folder and
  the same settings read at import (PREFECT_*, CLEANSET_*, GX_*, PYTHON*, thread counts): anything
  else starts a new one (`key`);
- `--verbose` and `--help` run in the CLI's own process (Prefect reads its console logging level
  once, at import); so does everything when no waiting process answers;
- Ctrl-C (and SIGTERM, SIGHUP) is passed on to the serving process; when the CLI process dies,
  the serving one is interrupted as a Ctrl-C would;
- the socket lives in a folder only the user can open (`<tmp>/cleanset-<uid>`);
- CLEANSET_WARM=0 (or CLEANSET_SERVER_KEEP=0) turns it off; Linux and macOS only.

This module imports only the standard library: the CLI's path to a waiting process must not
import what the waiting process is there to have imported.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

WARM_ENV = "CLEANSET_WARM"
COMMANDS = ("run", "demo")
LOCAL = ("--verbose", "-v", "--help", "-h")  # arguments that keep a command in its own process
# environment read at import time (or that decides what is imported): part of the key
KEY_PREFIXES = ("PREFECT_", "CLEANSET_", "GX_", "PYTHON", "OMP_", "MKL_", "OPENBLAS_",
                "VECLIB_", "NUMEXPR_", "KMP_", "UV_", "VIRTUAL_ENV")
KEY_NAMES = ("DO_NOT_TRACK", "HOME", "TMPDIR", "PATH")
CONSOLE_LEVEL = "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"  # flows.progress.quiet_prefect's
# the CLI's quiet, offline-friendly defaults (flows/cli.py sets them before Prefect is imported;
# a user's own settings win)
CLI_DEFAULTS = {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "GX_ANALYTICS_ENABLED": "false"}
ACK_TIMEOUT = 120.0  # a waiting process still importing answers once it has
PRELOADED = "CLEANSET_PRELOADED"  # set in the serving process: the summary says so


def enabled() -> bool:
    from flows.local_server import keep_seconds

    if os.environ.get(WARM_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return keep_seconds() > 0 and hasattr(socket, "send_fds") and hasattr(socket, "AF_UNIX") \
        and sys.platform != "win32"


def eligible(argv: list[str]) -> bool:
    """Whether CLI arguments (without the program name) are a command a warm process serves."""
    return bool(argv) and argv[0] in COMMANDS and not any(a in LOCAL for a in argv[1:])


def folder() -> Path | None:
    """The user's private socket folder, or None when it cannot be made private."""
    path = Path(tempfile.gettempdir()) / f"cleanset-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        st = path.stat()
    except OSError:
        return None
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None  # someone else's, or open to others: never hand a terminal through it
    if len(str(path)) > 80:
        return None  # a socket's path has room for ~100 bytes (with the socket's own name)
    return path


def key(env: dict[str, str] | None = None) -> str:
    """What a waiting process must share with a command to serve it (see the module docstring)."""
    env = {**CLI_DEFAULTS, CONSOLE_LEVEL: "WARNING",  # as `run` sets it before Prefect's import
           **(os.environ if env is None else env)}
    parts: list[str] = [sys.executable, sys.version, os.getcwd()]
    here = Path(__file__).resolve().parent  # flows/ (cleanset/flows/ in the wheel); tasks/ beside
    for root in (here, here.parent / "tasks"):
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                st = path.stat()
                parts.append(f"{path}:{st.st_size}:{st.st_mtime_ns}")
    with contextlib.suppress(OSError):
        parts.append(str(os.stat(sysconfig.get_paths()["purelib"]).st_mtime_ns))
    parts.append(json.dumps(sorted(
        (k, v) for k, v in env.items()
        if (k.startswith(KEY_PREFIXES) or k in KEY_NAMES) and k not in (WARM_ENV, PRELOADED))))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _send(sock: socket.socket, message: dict, fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    frame = struct.pack("!I", len(data)) + data
    if fds:
        socket.send_fds(sock, [frame], fds)
    else:
        sock.sendall(frame)


def _receive(sock: socket.socket, fds: int = 0) -> tuple[dict | None, list[int]]:
    """One framed message (and up to `fds` file descriptors); None when the peer closed."""
    got: list[int] = []
    buffer = b""
    while len(buffer) < 4 or len(buffer) < 4 + struct.unpack("!I", buffer[:4])[0]:
        if fds and not got:
            chunk, new, _, _ = socket.recv_fds(sock, 1 << 16, fds)
            got.extend(new)
        else:
            chunk = sock.recv(1 << 16)
        if not chunk:
            for fd in got:
                os.close(fd)
            return None, []
        buffer += chunk
    size = struct.unpack("!I", buffer[:4])[0]
    return json.loads(buffer[4:4 + size]), got


def forward(argv: list[str], env: dict[str, str]) -> int | None:
    """Have a waiting warm process run `argv` (the full sys.argv) on this terminal; its exit
    code, or None when none took the command (then nothing ran: run it here)."""
    where = folder()
    if where is None or not eligible(argv[1:]) or not enabled():
        return None
    path = where / f"{key(env)}.sock"
    if not path.exists():
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(ACK_TIMEOUT)
        sock.connect(str(path))
        _send(sock, {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)},
              [sys.stdin.fileno(), sys.stdout.fileno(), sys.stderr.fileno()])
        ack, _ = _receive(sock)
    except (OSError, ValueError):
        ack = None
    if not ack:
        sock.close()
        return None
    pid = int(ack["pid"])

    def pass_on(signum: int, _frame) -> None:  # noqa: ANN001
        with contextlib.suppress(OSError):
            os.kill(pid, signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, pass_on)
    sock.settimeout(None)
    try:
        done, _ = _receive(sock)
    except OSError:
        done = None
    sock.close()
    if done is None:
        print("error: the process running this command ended without an exit code (killed?)",
              file=sys.stderr)
        return 1
    return int(done["code"])


def prepare_next(argv: list[str], env: dict[str, str]) -> None:
    """After a command a warm process could serve: start the next waiting process (unless one
    for the same key is waiting already). It imports while the user reads the summary."""
    where = folder()
    if where is None or not eligible(argv[1:]) or not enabled():
        return
    name = key(env)
    if _waiting(where / f"{name}.lock"):
        return
    log = open(where / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
    # this module by its own name: flows.warm here, cleanset.flows.warm in the wheel
    subprocess.Popen([sys.executable, "-m", __spec__.name, name], env=env, cwd=os.getcwd(),
                     stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    log.close()


def _waiting(lock: Path) -> bool:
    """Whether a process holds `lock` (a waiting process holds its key's lock until it serves)."""
    import fcntl

    try:
        with open(lock, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(handle, fcntl.LOCK_UN)
        return False
    except OSError:
        return True


def ready(env: dict[str, str] | None = None) -> bool:
    """Whether a waiting process for these settings has imported everything (benchmarks)."""
    where = folder()
    return bool(where) and (where / f"{key(env)}.ready").exists()


def stop_waiting() -> int:
    """Stop the waiting processes of this user (tests, benchmarks); how many were stopped."""
    where = folder()
    stopped = 0
    for pid_file in sorted(where.glob("*.pid")) if where else []:
        stopped += _stop(pid_file)
    return stopped


def _stop(pid_file: Path) -> int:
    """Stop the waiting process a pid file names (1), or 0 when there is none."""
    try:
        os.kill(int(json.loads(pid_file.read_text())["pid"]), signal.SIGTERM)
        return 1
    except (OSError, ValueError, KeyError, TypeError):
        return 0
    finally:
        with contextlib.suppress(OSError):
            pid_file.unlink()


def _supersede(where: Path, name: str) -> None:
    """Stop the processes waiting in this working folder for other keys: the code or a setting
    changed since they started (each holds ~400 MiB; editing and re-running ten times must not
    leave ten of them waiting)."""
    for pid_file in where.glob("*.pid"):
        if pid_file.stem == name:
            continue
        try:
            if json.loads(pid_file.read_text()).get("cwd") != os.getcwd():
                continue
        except (OSError, ValueError, AttributeError):
            continue
        _stop(pid_file)


def preload() -> None:
    """Import what a run imports (measured: everything a 1,000-row run loads after
    `flows.clean`: Great Expectations, matplotlib, jinja2), without creating the CLI's consoles
    (they are made once the command's terminal is here, so colours and width are its). `serve`
    then draws the report's charts once unless a command is waiting already."""
    os.environ.setdefault(CONSOLE_LEVEL, "WARNING")
    import jinja2  # noqa: F401 - the report's template

    from flows import clean, folders  # noqa: F401 - Prefect, scikit-learn, pandas, cleanlab, ...
    from tasks.report.charts import pyplot
    from tasks.validate import import_gx

    import_gx()
    pyplot()  # matplotlib, Agg


def serve(name: str, idle: float) -> None:
    """The waiting process: hold the key's lock, listen, import, serve one command, exit."""
    import fcntl

    where = folder()
    if where is None:
        return
    lock = open(where / f"{name}.lock", "a")  # noqa: SIM115 - held until a command comes
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return  # another process waits for this key already
    _tidy(where, name)
    path = where / f"{name}.sock"
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    _supersede(where, name)
    (where / f"{name}.pid").write_text(json.dumps({"pid": os.getpid(), "cwd": os.getcwd()}))
    preload()  # a command that connects meanwhile waits in the listen backlog
    import select

    if not select.select([listener], [], [], 0)[0]:  # nobody waiting yet: draw the charts once
        from tasks.report.charts import warm_up

        warm_up()  # fonts loaded, text caches filled
    (where / f"{name}.ready").touch()  # for benchmarks: ready to serve at once
    listener.settimeout(idle)
    try:
        conn, _ = listener.accept()
    except (TimeoutError, OSError):
        return
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        for suffix in (".pid", ".ready"):
            with contextlib.suppress(FileNotFoundError):
                (where / f"{name}{suffix}").unlink()
        listener.close()
        lock.close()  # the next waiting process may start
    conn.settimeout(30)
    request, fds = _receive(conn, fds=3)
    if request is None or len(fds) != 3:
        return
    for target, fd in zip((0, 1, 2), fds, strict=True):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update({**request["env"], PRELOADED: f"{time.time() - _STARTED:.0f}"})
    conn.settimeout(None)
    _send(conn, {"pid": os.getpid()})
    import threading

    threading.Thread(target=_interrupt_when_gone, args=(conn,), daemon=True).start()
    sys.argv = list(request["argv"])
    from flows import cli

    try:
        cli.app()
        code: int | str | None = 0
    except SystemExit as exc:
        code = exc.code
    def answer(code: int) -> None:  # the command is done: no Ctrl-C may interrupt the exit
        _done.append(code)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _send(conn, {"code": code})

    cli.exit_now(code, before=answer)


_done: list[int] = []


def _tidy(where: Path, name: str, age: float = 3600.0) -> None:
    """Remove the files of other keys (older code or settings) whose process is gone."""
    for lock in where.glob("*.lock"):
        other = lock.stem
        try:
            if other == name or time.time() - lock.stat().st_mtime < age or _waiting(lock):
                continue
        except OSError:  # removed meanwhile
            continue
        for suffix in (".sock", ".pid", ".ready", ".log", ".lock"):
            with contextlib.suppress(OSError):
                (where / f"{other}{suffix}").unlink()


def _interrupt_when_gone(conn: socket.socket) -> None:
    """The CLI process that handed over its command died (nothing more to read): Ctrl-C here,
    unless the command is done."""
    with contextlib.suppress(OSError):
        while conn.recv(1 << 10):
            pass
    if not _done:
        os.kill(os.getpid(), signal.SIGINT)


_STARTED = time.time()

if __name__ == "__main__":
    from flows.local_server import keep_seconds

    serve(sys.argv[1], keep_seconds())
