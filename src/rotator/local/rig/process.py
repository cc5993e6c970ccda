"""What every database rig needs besides the database: commands (in parallel, as the server's OS user when we are
root), directories that OS user can reach, free loopback ports, polling and atomic JSON files.

Root: database servers refuse to run as root (PostgreSQL) or should not (MariaDB), so as root their commands run as an
unprivileged OS user through ``runuser``, in directories chowned to it. That user must be able to reach them. When it
cannot traverse to the rig's base directory (pytest's ``/tmp/pytest-of-root`` is 0700, and pytest resets it to 0700 at
every session start), no permission of the caller's directories is changed: the node directories live in a private
runtime dir ``$TMPDIR/<prefix>XXXX`` instead, and the base directory holds symlinks to them.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

LOG = logging.getLogger("local_stack.rig.process")

HOST = "127.0.0.1"
MACHINE_PORTS = frozenset({5432, 3306})  # the machine's own PostgreSQL and MariaDB: never ours
SOCKET_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1

T = TypeVar("T")


class RigError(RuntimeError):
    """A local database rig could not do what was asked."""


# --- waiting and files -------------------------------------------------------------------------------------------


def poll(
    check: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    ignore: tuple[type[Exception], ...] = (),
) -> T:
    """``check()`` until it returns something other than None; TimeoutError after ``timeout`` seconds. Exceptions of
    the ``ignore`` types count as "not yet", and the last one is named in the TimeoutError."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = check()
            if result is not None:
                return result
        except ignore as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            suffix = f" (last error: {last_error})" if last_error is not None else ""
            raise TimeoutError(f"timed out after {timeout:.1f} s waiting for {what}{suffix}")
        time.sleep(interval)


def write_json(path: Path, data: Any) -> None:
    """Atomically (readers see no file or the whole document) and private to its owner (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held open together so they cannot collide), never the machine's own servers'."""
    sockets: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((HOST, 0))
            port = sock.getsockname()[1]
            if port not in MACHINE_PORTS:
                ports.append(port)
    finally:
        for sock in sockets:
            sock.close()
    return ports


def pid_alive(pid: int | None) -> bool:
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user (the server's OS user)
    return True


# --- the server's OS user and its directories --------------------------------------------------------------------


def server_os_user(env_var: str, default: str, server: str) -> str | None:
    """The OS user the servers run as: None (the caller) unless we are root, then ``$env_var`` or ``default``."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get(env_var) or default
    try:
        uid = pwd.getpwnam(name).pw_uid
    except KeyError:
        raise RigError(
            f"running as root, but OS user {name!r} does not exist; {server} must not run as root. Create it or set "
            f"${env_var} to an unprivileged user"
        ) from None
    if uid == 0:
        raise RigError(f"${env_var}={name!r} is root; {server} must not run as root")
    if shutil.which("runuser") is None:
        raise RigError(f"running as root needs `runuser` (util-linux) to start {server} as another user")
    return name


def as_user(os_user: str | None, argv: Sequence[str]) -> list[str]:
    return ["runuser", "-u", os_user, "--", *argv] if os_user is not None else list(argv)


def make_owned_dir(path: Path, os_user: str | None, mode: int = 0o700) -> None:
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    os.chmod(path, mode)
    if os_user is not None:
        entry = pwd.getpwnam(os_user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def private_runtime_dir(base_dir: Path, os_user: str | None, prefix: str) -> Path | None:
    """A fresh 0700 dir owned by ``os_user`` when that user cannot traverse to ``base_dir`` (asked of the OS, so ACLs
    count), else None: the node directories can live in ``base_dir`` itself."""
    if os_user is None:
        return None
    probe = subprocess.run(as_user(os_user, ["test", "-x", str(base_dir)]), check=False, capture_output=True)
    if probe.returncode == 0:
        return None
    runtime_dir = Path(tempfile.mkdtemp(prefix=prefix))
    make_owned_dir(runtime_dir, os_user)
    LOG.info("OS user %r cannot reach %s; node dirs live in %s (symlinked from it)", os_user, base_dir, runtime_dir)
    return runtime_dir


def short_socket_dir(run_dir: Path, socket_name: str, prefix: str) -> Path | None:
    """None (= RUN_DIR/run) when a socket path there fits in sun_path, else a fresh short dir under $TMPDIR."""
    if len(str(run_dir / "run" / socket_name)) <= SOCKET_PATH_MAX:
        return None
    short = Path(tempfile.mkdtemp(prefix=prefix))
    LOG.info("%s is too deep for a unix socket path; using %s for sockets", run_dir, short)
    return short


def remove_dirs(base_dir: Path, *extra: Path | None) -> None:
    """Remove ``base_dir`` (its symlinks are unlinked, not followed) and the runtime/socket dirs outside it."""
    shutil.rmtree(base_dir, ignore_errors=True)
    for path in extra:
        if path is not None and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
    if base_dir.exists():
        raise RigError(f"could not remove {base_dir}")


# --- commands ----------------------------------------------------------------------------------------------------


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _failure(what: str, returncode: int, output: str, log_file: Path | None) -> str:
    detail = output.strip()[-2000:]
    if log_file is not None:
        detail += f"\n--- {log_file} (tail) ---\n{_tail(log_file)}"
    return f"{what} failed (exit {returncode}): {detail}"


def run(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    what: str,
    log_file: Path | None = None,
    timeout: float = 120.0,
) -> None:
    """Run one command; RigError with its output (and the tail of ``log_file``) when it fails."""
    run_parallel([(what, argv, log_file)], cwd=cwd, env=env, timeout=timeout)


def run_parallel(
    jobs: Sequence[tuple[str, Sequence[str], Path | None]],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float = 120.0,
) -> None:
    """Run several ``(what, argv, log_file)`` commands at once; one RigError naming every one that failed."""
    pipes: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "stdin": subprocess.DEVNULL}
    started = [
        (what, subprocess.Popen(list(argv), cwd=cwd, env=env, text=True, **pipes), log_file)
        for what, argv, log_file in jobs
    ]
    errors: list[str] = []
    deadline = time.monotonic() + timeout
    for what, process, log_file in started:
        try:
            out, err = process.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            errors.append(f"{what}: timed out after {timeout:.0f} s")
            continue
        if process.returncode != 0:
            errors.append(_failure(what, process.returncode, err or out, log_file))
    if errors:
        raise RigError("\n".join(errors))
