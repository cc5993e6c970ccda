"""A real PostgreSQL primary with N streaming replicas on loopback ports.

Used by ``rotator local up/down``, the integration tests and the demo. Everything lives under one base directory::

    BASE/
      cluster.json        cluster description (mode 0600: it holds the admin password)
      primary/            data directory of the primary
      replica1/ ...       data directories of the replicas (pg_basebackup -R, one physical slot per replica)
      logs/<node>.log     server logs
      run/                unix socket directory (a short dir under $TMPDIR if BASE is too deep for a socket path)

Server binaries come from ``$ROTATOR_PG_BINDIR``, else the newest ``/usr/lib/postgresql/*/bin`` with ``initdb``,
else ``pg_config --bindir``. Nodes listen on 127.0.0.1 only, on free ports picked by binding 127.0.0.1:0.

Root: initdb/postgres refuse to run as root, so as root every server command runs as the ``postgres`` OS user
(``$ROTATOR_PG_OS_USER`` overrides) via ``runuser``, and the node directories are chowned to it. That user must be
able to reach them. When it cannot traverse to BASE (e.g. pytest's ``/tmp/pytest-of-root`` is 0700, and pytest
resets it to 0700 at every session start), no permission of the caller's directories is changed: the node
directories (data, logs, sockets) are created in a private runtime dir ``$TMPDIR/rotator-pg-XXXX`` instead, and
``BASE/primary``, ``BASE/replica1``, ``BASE/logs``, ``BASE/run`` are symlinks to it. ``PgNode.data_dir`` is then the
real path; ``stop_cluster(remove=True)`` removes both.

Manual use::

    python -m rotator.local.postgres_rig up|down|status BASE_DIR [--replicas N] [--dbname NAME]
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import logging
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

__all__ = [
    "PgCluster",
    "PgNode",
    "RigError",
    "find_bindir",
    "load_cluster",
    "node_is_running",
    "start_cluster",
    "start_node",
    "stop_cluster",
    "stop_node",
    "wait_replicas_caught_up",
]

log = logging.getLogger(__name__)

CLUSTER_FILE = "cluster.json"
ADMIN_USER = "rotator_admin"
REPLICATION_USER = "replicator"
# initdb superuser; reachable only over the unix socket (trust)
BOOTSTRAP_USER = "postgres"
HOST = "127.0.0.1"
FORBIDDEN_PORTS = frozenset({5432})  # the machine's own PostgreSQL
ENV_BINDIR = "ROTATOR_PG_BINDIR"
ENV_OS_USER = "ROTATOR_PG_OS_USER"
DEFAULT_OS_USER = "postgres"
_SOCKET_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1
_SCHEMA_VERSION = 1
_START_TIMEOUT_S = 60.0
_READY_TIMEOUT_S = 30.0

T = TypeVar("T")


class RigError(RuntimeError):
    """The local PostgreSQL rig could not do what was asked."""


@dataclass(frozen=True)
class PgNode:
    name: str
    role: Literal["primary", "replica"]
    host: str
    port: int
    data_dir: Path

    @property
    def slot_name(self) -> str:
        """Physical replication slot used by this node (replicas only)."""
        return self.name

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "host": self.host,
            "port": self.port,
            "data_dir": str(self.data_dir),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PgNode:
        role = data["role"]
        if role not in ("primary", "replica"):
            raise RigError(f"invalid node role in cluster description: {role!r}")
        return cls(
            name=str(data["name"]),
            role=role,
            host=str(data["host"]),
            port=int(data["port"]),
            data_dir=Path(data["data_dir"]),
        )


@dataclass(frozen=True)
class PgCluster:
    base_dir: Path
    bindir: Path
    primary: PgNode
    replicas: tuple[PgNode, ...]
    dbname: str
    admin_user: str
    admin_password: str = field(repr=False)
    socket_dir: Path | None = None  # unix socket dir; None means RUNTIME/run
    # where node dirs really live (see module docstring); None means base_dir
    runtime_dir: Path | None = None
    # OS user the servers run as when invoked by root; None means the invoking user
    os_user: str | None = None
    replicator_password: str | None = field(default=None, repr=False)

    @property
    def nodes(self) -> tuple[PgNode, ...]:
        return (self.primary, *self.replicas)

    @property
    def run_dir(self) -> Path:
        """Directory holding the node dirs, logs/ and run/: base_dir, or the private runtime dir."""
        return self.runtime_dir if self.runtime_dir is not None else self.base_dir

    @property
    def sock_dir(self) -> Path:
        return self.socket_dir if self.socket_dir is not None else self.run_dir / "run"

    @property
    def logs_dir(self) -> Path:
        return self.run_dir / "logs"

    def log_file(self, node: PgNode) -> Path:
        return self.logs_dir / f"{node.name}.log"

    def node(self, name: str) -> PgNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise RigError(f"no node named {name!r} in cluster at {self.base_dir}")

    def dsn(self, node: PgNode, user: str | None = None, password: str | None = None, dbname: str | None = None) -> str:
        """libpq conninfo for ``node`` over TCP; user/password/dbname default to the admin role and app db.

        When ``user`` is given without ``password``, no password is put in the string.
        """
        if user is None:
            user = self.admin_user
            if password is None:
                password = self.admin_password
        params: dict[str, Any] = {
            "host": node.host,
            "port": node.port,
            "user": user,
            "dbname": dbname if dbname is not None else self.dbname,
        }
        if password is not None:
            params["password"] = password
        return make_conninfo("", **params)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": _SCHEMA_VERSION,
            "base_dir": str(self.base_dir),
            "bindir": str(self.bindir),
            "primary": self.primary.to_json(),
            "replicas": [r.to_json() for r in self.replicas],
            "dbname": self.dbname,
            "admin_user": self.admin_user,
            "admin_password": self.admin_password,
            "socket_dir": str(self.socket_dir) if self.socket_dir is not None else None,
            "runtime_dir": str(self.runtime_dir) if self.runtime_dir is not None else None,
            "os_user": self.os_user,
            "replicator_password": self.replicator_password,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PgCluster:
        try:
            return cls(
                base_dir=Path(data["base_dir"]),
                bindir=Path(data["bindir"]),
                primary=PgNode.from_json(data["primary"]),
                replicas=tuple(PgNode.from_json(r) for r in data.get("replicas", [])),
                dbname=str(data["dbname"]),
                admin_user=str(data["admin_user"]),
                admin_password=str(data["admin_password"]),
                socket_dir=Path(data["socket_dir"]) if data.get("socket_dir") else None,
                runtime_dir=Path(data["runtime_dir"]) if data.get("runtime_dir") else None,
                os_user=data.get("os_user"),
                replicator_password=data.get("replicator_password"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RigError(f"invalid cluster description: {exc!r}") from exc


# --------------------------------------------------------------------------------------------------------------
# binaries, OS user, permissions


def find_bindir(env: Mapping[str, str] | None = None) -> Path:
    """Locate the PostgreSQL server binaries (see module docstring for the order)."""
    env = os.environ if env is None else env
    explicit = env.get(ENV_BINDIR)
    if explicit:
        path = Path(explicit)
        if not (path / "initdb").is_file():
            raise RigError(f"${ENV_BINDIR}={explicit} has no initdb")
        return path

    def version_key(p: str) -> tuple[int, ...]:
        ver = Path(p).parent.name
        return tuple(int(x) for x in re.findall(r"\d+", ver)) or (0,)

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version_key, reverse=True)
    for cand in candidates:
        if (Path(cand) / "initdb").is_file():
            return Path(cand)

    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], check=True, capture_output=True, text=True, timeout=10)
            path = Path(out.stdout.strip())
            if (path / "initdb").is_file():
                return path
        except (subprocess.SubprocessError, OSError):
            pass
    raise RigError(
        "PostgreSQL server binaries not found: set $ROTATOR_PG_BINDIR to a directory holding initdb, pg_ctl and "
        "pg_basebackup, or install them (Debian: apt-get install postgresql)"
    )


def _resolve_os_user() -> str | None:
    """The OS user servers run as: None (the caller) unless we are root."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get(ENV_OS_USER) or DEFAULT_OS_USER
    try:
        pw = pwd.getpwnam(name)
    except KeyError as exc:
        raise RigError(
            f"running as root, but OS user {name!r} does not exist; PostgreSQL refuses to run as root. Create it "
            f"or set ${ENV_OS_USER} to an unprivileged user"
        ) from exc
    if pw.pw_uid == 0:
        raise RigError(f"${ENV_OS_USER}={name!r} is root; PostgreSQL refuses to run as root")
    if shutil.which("runuser") is None:
        raise RigError("running as root needs `runuser` (util-linux) to start PostgreSQL as another user")
    return name


def _effective_os_user(cluster: PgCluster) -> str | None:
    if os.geteuid() != 0:
        return None
    return cluster.os_user or _resolve_os_user()


def _can_reach(path: Path, os_user: str) -> bool:
    """Whether ``os_user`` can traverse every directory down to ``path`` (asked of the OS, so ACLs count)."""
    probe = subprocess.run(["runuser", "-u", os_user, "--", "test", "-x", str(path)], check=False, capture_output=True)
    return probe.returncode == 0


def _make_owned_dir(path: Path, os_user: str | None, mode: int = 0o700) -> None:
    path.mkdir(mode=mode, parents=False, exist_ok=True)
    os.chmod(path, mode)
    if os_user is not None:
        pw = pwd.getpwnam(os_user)
        os.chown(path, pw.pw_uid, pw.pw_gid)


# --------------------------------------------------------------------------------------------------------------
# process helpers


def _server_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for server tools: the caller's minus every PG* variable (PGPORT=5432 etc. must not leak in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_MESSAGES"] = "C"
    if extra:
        env.update(extra)
    return env


def _argv(bindir: Path, os_user: str | None, tool: str, *args: str) -> list[str]:
    cmd = [str(bindir / tool), *args]
    if os_user is not None:
        return ["runuser", "-u", os_user, "--", *cmd]
    return cmd


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _run(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    what: str,
    log_file: Path | None = None,
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(
            list(argv),
            check=False,
            cwd=cwd,
            env=_server_env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise RigError(f"{what}: timed out after {timeout:.0f}s") from exc
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()[-2000:]
        if log_file is not None:
            detail += f"\n--- {log_file} (tail) ---\n{_tail(log_file)}"
        raise RigError(f"{what} failed (exit {proc.returncode}): {detail}")
    return proc


def _run_parallel(
    jobs: Sequence[tuple[str, list[str], Path | None]],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
) -> None:
    """Run several commands at once; raise RigError naming every one that failed."""
    procs: list[tuple[str, subprocess.Popen[str], Path | None]] = []
    full_env = _server_env(env)
    for what, argv, log_file in jobs:
        procs.append(
            (
                what,
                subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env=full_env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    stdin=subprocess.DEVNULL,
                ),
                log_file,
            )
        )
    errors: list[str] = []
    deadline = time.monotonic() + timeout
    for what, proc, log_file in procs:
        try:
            out, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            errors.append(f"{what}: timed out")
            continue
        if proc.returncode != 0:
            detail = (err or out).strip()[-2000:]
            if log_file is not None:
                detail += f"\n--- {log_file} (tail) ---\n{_tail(log_file)}"
            errors.append(f"{what} failed (exit {proc.returncode}): {detail}")
    if errors:
        raise RigError("\n".join(errors))


def _poll(fn: Callable[[], T | None], *, timeout: float, interval: float = 0.05, what: str) -> T:
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            result = fn()
            if result is not None:
                return result
        except psycopg.Error as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            suffix = f" (last error: {last_exc})" if last_exc is not None else ""
            raise RigError(f"timed out after {timeout:.1f}s waiting for {what}{suffix}")
        time.sleep(interval)


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held open together so they cannot collide), never 5432."""
    socks: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((HOST, 0))
            port = s.getsockname()[1]
            if port not in FORBIDDEN_PORTS:
                ports.append(port)
    finally:
        for s in socks:
            s.close()
    return ports


def _conf_str(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


# --------------------------------------------------------------------------------------------------------------
# state


def _pidfile_pid(data_dir: Path) -> int | None:
    try:
        first = (data_dir / "postmaster.pid").read_text().split("\n", 1)[0].strip()
        return int(first)
    except (OSError, ValueError):
        return None


def node_is_running(cluster: PgCluster, node: PgNode) -> bool:
    """True when the node's postmaster (per its postmaster.pid) is alive."""
    pid = _pidfile_pid(node.data_dir)
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def load_cluster(base_dir: Path) -> PgCluster | None:
    """The cluster described by BASE/cluster.json, or None when there is none."""
    path = Path(base_dir) / CLUSTER_FILE
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RigError(f"cannot read {path}: {exc}") from exc
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RigError(f"{path} is not valid JSON: {exc}") from exc
    return PgCluster.from_json(data)


def _write_cluster_file(cluster: PgCluster) -> None:
    path = cluster.base_dir / CLUSTER_FILE
    tmp = path.with_suffix(".json.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(cluster.to_json(), fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------------------
# SQL helpers


@contextlib.contextmanager
def _connect(conninfo: str, *, timeout: int = 5) -> Iterator[psycopg.Connection[Any]]:
    conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=timeout)
    try:
        yield conn
    finally:
        conn.close()


def _bootstrap_conninfo(cluster: PgCluster, node: PgNode) -> str:
    return make_conninfo("", host=str(cluster.sock_dir), port=node.port, user=BOOTSTRAP_USER, dbname="postgres")


def _scram_verifier(conn: psycopg.Connection[Any], user: str, password: str) -> str:
    """SCRAM-SHA-256 verifier computed by libpq on the client: the plaintext never reaches the server."""
    verifier = conn.pgconn.encrypt_password(password.encode(), user.encode(), b"scram-sha-256")
    return verifier.decode()


def _bootstrap_roles(cluster: PgCluster, replicator_password: str) -> None:
    with _connect(_bootstrap_conninfo(cluster, cluster.primary)) as conn:
        admin_verifier = _scram_verifier(conn, cluster.admin_user, cluster.admin_password)
        repl_verifier = _scram_verifier(conn, REPLICATION_USER, replicator_password)
        conn.execute(
            sql.SQL("CREATE ROLE {} WITH LOGIN SUPERUSER CREATEROLE CREATEDB PASSWORD {}").format(
                sql.Identifier(cluster.admin_user), sql.Literal(admin_verifier)
            )
        )
        conn.execute(
            sql.SQL("CREATE ROLE {} WITH LOGIN REPLICATION PASSWORD {}").format(
                sql.Identifier(REPLICATION_USER), sql.Literal(repl_verifier)
            )
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(cluster.dbname), sql.Identifier(cluster.admin_user)
            )
        )
        # Slots are created here, reserving WAL immediately, rather than by `pg_basebackup -C`: with parallel base
        # backups, one backup's checkpoint can otherwise remove a segment the other's WAL stream still needs
        # ("requested WAL segment ... has already been removed").
        for replica in cluster.replicas:
            conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (replica.slot_name,))


def _replica_state(cluster: PgCluster, node: PgNode) -> tuple[bool, str | None]:
    with _connect(cluster.dsn(node, dbname="postgres"), timeout=2) as conn:
        row = conn.execute("SELECT pg_is_in_recovery(), (SELECT status FROM pg_stat_wal_receiver LIMIT 1)").fetchone()
        assert row is not None
        return bool(row[0]), row[1]


def _wait_replica_ready(cluster: PgCluster, node: PgNode, *, streaming: bool, timeout: float) -> None:
    def check() -> bool | None:
        in_recovery, status = _replica_state(cluster, node)
        if not in_recovery:
            raise RigError(f"{node.name} is up but not in recovery (promoted?)")
        if streaming and status != "streaming":
            return None
        return True

    _poll(check, timeout=timeout, what=f"{node.name} to be {'streaming' if streaming else 'in recovery'}")


def _wait_primary_ready(cluster: PgCluster, timeout: float) -> None:
    def check() -> bool | None:
        with _connect(cluster.dsn(cluster.primary, dbname="postgres"), timeout=2) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            assert row is not None
            if row[0]:
                raise RigError("primary is in recovery")
            return True

    _poll(check, timeout=timeout, what="primary to accept connections")


def wait_replicas_caught_up(cluster: PgCluster, timeout: float = 10.0) -> None:
    """Wait until every running replica has replayed up to the primary's current WAL LSN."""
    with _connect(cluster.dsn(cluster.primary, dbname="postgres")) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        target = str(row[0])
    deadline = time.monotonic() + timeout
    for node in cluster.replicas:
        if not node_is_running(cluster, node):
            continue

        def caught_up(node: PgNode = node) -> bool | None:
            with _connect(cluster.dsn(node, dbname="postgres"), timeout=2) as c:
                r = c.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)).fetchone()
                return True if r is not None and r[0] else None

        _poll(caught_up, timeout=max(0.0, deadline - time.monotonic()), what=f"{node.name} to replay up to {target}")


# --------------------------------------------------------------------------------------------------------------
# node control


def _pg_ctl_start_argv(cluster: PgCluster, node: PgNode, os_user: str | None) -> list[str]:
    args = ["-D", str(node.data_dir), "-l", str(cluster.log_file(node)), "-w", "-t", str(int(_START_TIMEOUT_S))]
    return _argv(cluster.bindir, os_user, "pg_ctl", *args, "start")


def start_node(cluster: PgCluster, node: PgNode) -> None:
    """Start a stopped node and wait until it serves (a replica: in recovery, and streaming if the primary runs)."""
    if node_is_running(cluster, node):
        raise RigError(f"{node.name} is already running")
    os_user = _effective_os_user(cluster)
    _prepare_socket_dir(cluster, os_user)
    _run(
        _pg_ctl_start_argv(cluster, node, os_user),
        cwd=cluster.base_dir,
        what=f"starting {node.name}",
        log_file=cluster.log_file(node),
        timeout=_START_TIMEOUT_S + 10,
    )
    if node.role == "primary":
        _wait_primary_ready(cluster, _READY_TIMEOUT_S)
    else:
        _wait_replica_ready(
            cluster, node, streaming=node_is_running(cluster, cluster.primary), timeout=_READY_TIMEOUT_S
        )


def _stop_argv(cluster: PgCluster, node: PgNode, os_user: str | None, immediate: bool) -> list[str]:
    mode = "immediate" if immediate else "fast"
    return _argv(cluster.bindir, os_user, "pg_ctl", "-D", str(node.data_dir), "-m", mode, "-w", "-t", "60", "stop")


def stop_node(cluster: PgCluster, node: PgNode, immediate: bool = False) -> None:
    """Stop one node (fast shutdown, or immediate = crash-like). A node that is not running is left alone."""
    if not node_is_running(cluster, node):
        return
    _run(
        _stop_argv(cluster, node, _effective_os_user(cluster), immediate),
        cwd=cluster.base_dir,
        what=f"stopping {node.name}",
        log_file=cluster.log_file(node),
        timeout=70,
    )


def stop_cluster(cluster: PgCluster, remove: bool = True) -> None:
    """Stop every node (already-stopped ones are skipped); remove the base dir (and socket dir) if ``remove``."""
    os_user = _effective_os_user(cluster) if cluster.base_dir.exists() else None
    running = [n for n in cluster.replicas if node_is_running(cluster, n)]
    if running:
        _run_parallel(
            [(f"stopping {n.name}", _stop_argv(cluster, n, os_user, False), cluster.log_file(n)) for n in running],
            cwd=cluster.base_dir,
            timeout=70,
        )
    if node_is_running(cluster, cluster.primary):
        stop_node(cluster, cluster.primary)
    if remove:
        still = [n.name for n in cluster.nodes if node_is_running(cluster, n)]
        if still:
            raise RigError(f"not removing {cluster.base_dir}: {', '.join(still)} still running")
        shutil.rmtree(cluster.base_dir, ignore_errors=True)  # symlinks into runtime_dir are unlinked, not followed
        for extra in (cluster.runtime_dir, cluster.socket_dir):
            if extra is not None and extra.is_dir() and not extra.is_symlink():
                shutil.rmtree(extra, ignore_errors=True)
        if cluster.base_dir.exists():
            raise RigError(f"could not remove {cluster.base_dir}")


# --------------------------------------------------------------------------------------------------------------
# cluster creation


def _choose_socket_dir(run_dir: Path) -> Path | None:
    """None (= RUNTIME/run) when the socket path fits in sun_path, else a fresh short dir under $TMPDIR."""
    if len(str(run_dir / "run")) + len("/.s.PGSQL.65535") <= _SOCKET_PATH_MAX:
        return None
    short = Path(tempfile.mkdtemp(prefix="rotator-pg-"))
    log.info("base dir too deep for a unix socket path; using %s for sockets", short)
    return short


def _prepare_socket_dir(cluster: PgCluster, os_user: str | None) -> None:
    if not cluster.sock_dir.exists():
        cluster.sock_dir.mkdir(mode=0o700, parents=True)
    _make_owned_dir(cluster.sock_dir, os_user)


def _primary_conf(cluster: PgCluster, max_senders: int) -> str:
    settings: list[tuple[str, str]] = [
        ("listen_addresses", _conf_str(HOST)),
        ("port", str(cluster.primary.port)),
        ("unix_socket_directories", _conf_str(str(cluster.sock_dir))),
        ("unix_socket_permissions", "0700"),
        ("fsync", "off"),
        ("full_page_writes", "off"),
        ("password_encryption", _conf_str("scram-sha-256")),
        ("wal_level", "replica"),
        ("max_wal_senders", str(max_senders)),
        ("max_replication_slots", str(max_senders)),
        ("wal_keep_size", _conf_str("64MB")),
        ("hot_standby", "on"),
        ("wal_receiver_status_interval", _conf_str("1s")),
        ("shared_buffers", _conf_str("32MB")),
        ("max_connections", "100"),
        ("log_statement", _conf_str("none")),
        ("log_min_error_statement", "panic"),
        ("log_line_prefix", _conf_str("%m [%p] %q%u@%d ")),
        ("ssl", "off"),
    ]
    body = "\n".join(f"{k} = {v}" for k, v in settings)
    return f"\n# --- rotator local rig ---\n{body}\n"


_HBA = """\
# rotator local rig: bootstrap superuser over the unix socket only; everything else SCRAM over loopback TCP
local   all          {boot}                     trust
local   replication  {boot}                     trust
host    replication  {repl}   127.0.0.1/32      scram-sha-256
host    all          all      127.0.0.1/32      scram-sha-256
"""


def _check_base_dir(base_dir: Path) -> None:
    existing = load_cluster(base_dir) if base_dir.exists() else None
    if existing is not None:
        running = [n.name for n in existing.nodes if node_is_running(existing, n)]
        if running:
            raise RigError(
                f"{base_dir} holds a running cluster ({', '.join(running)}); stop it first "
                f"(python -m rotator.local.postgres_rig down {base_dir})"
            )
        log.info("removing stale stopped cluster at %s", base_dir)
        stop_cluster(existing, remove=True)
        return
    if base_dir.exists() and any(base_dir.iterdir()):
        raise RigError(f"{base_dir} is not empty and holds no cluster.json; refusing to overwrite it")


def start_cluster(base_dir: Path, replicas: int = 2, dbname: str = "appdb") -> PgCluster:
    """Create and start a fresh primary + ``replicas`` streaming replicas under ``base_dir``.

    Raises RigError if ``base_dir`` holds a running cluster, or a non-empty directory that is not a rig. A stopped
    rig left in ``base_dir`` is replaced. On failure the nodes started so far are stopped and the directory (with
    its logs) is kept for inspection; the next start_cluster replaces it.
    """
    if replicas < 0:
        raise RigError("replicas must be >= 0")
    base_dir = Path(base_dir).absolute()
    bindir = find_bindir()
    os_user = _resolve_os_user()
    _check_base_dir(base_dir)
    base_dir.mkdir(parents=True, exist_ok=True)
    runtime_dir: Path | None = None
    if os_user is not None and not _can_reach(base_dir, os_user):
        runtime_dir = Path(tempfile.mkdtemp(prefix="rotator-pg-"))
        _make_owned_dir(runtime_dir, os_user)  # 0700, owned by the server's OS user
        log.info("OS user %r cannot reach %s; node dirs live in %s (symlinked from it)", os_user, base_dir, runtime_dir)
    run_dir = runtime_dir if runtime_dir is not None else base_dir

    ports = _free_ports(1 + replicas)
    primary = PgNode("primary", "primary", HOST, ports[0], run_dir / "primary")
    replica_nodes = tuple(
        PgNode(f"replica{i}", "replica", HOST, ports[i], run_dir / f"replica{i}") for i in range(1, replicas + 1)
    )
    replicator_password = secrets.token_urlsafe(24)
    cluster = PgCluster(
        base_dir=base_dir,
        bindir=bindir,
        primary=primary,
        replicas=replica_nodes,
        dbname=dbname,
        admin_user=ADMIN_USER,
        admin_password=secrets.token_urlsafe(24),
        socket_dir=_choose_socket_dir(run_dir),
        runtime_dir=runtime_dir,
        os_user=os_user,
        replicator_password=replicator_password,
    )
    # written first, so a half-started rig can always be cleaned up by `down`
    _write_cluster_file(cluster)
    try:
        _create(cluster, os_user, replicator_password)
    except BaseException:
        with contextlib.suppress(Exception):
            stop_cluster(cluster, remove=False)
        raise
    return cluster


def _create(cluster: PgCluster, os_user: str | None, replicator_password: str) -> None:
    base = cluster.base_dir
    _make_owned_dir(cluster.logs_dir, os_user, 0o750)
    _prepare_socket_dir(cluster, os_user)
    for node in cluster.nodes:
        _make_owned_dir(node.data_dir, os_user)
    if cluster.runtime_dir is not None:
        for name in [*(n.name for n in cluster.nodes), "logs", "run"]:
            (base / name).symlink_to(cluster.runtime_dir / name, target_is_directory=True)

    # primary
    t0 = time.monotonic()
    initdb_args = ["-U", BOOTSTRAP_USER, "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"]
    _run(
        _argv(cluster.bindir, os_user, "initdb", "-D", str(cluster.primary.data_dir), *initdb_args),
        cwd=base,
        what="initdb",
    )
    conf = cluster.primary.data_dir / "postgresql.conf"
    with conf.open("a") as fh:
        fh.write(_primary_conf(cluster, max_senders=len(cluster.replicas) + 5))
    (cluster.primary.data_dir / "pg_hba.conf").write_text(_HBA.format(boot=BOOTSTRAP_USER, repl=REPLICATION_USER))
    _run(
        _pg_ctl_start_argv(cluster, cluster.primary, os_user),
        cwd=base,
        what="starting primary",
        log_file=cluster.log_file(cluster.primary),
        timeout=_START_TIMEOUT_S + 10,
    )
    _bootstrap_roles(cluster, replicator_password)
    _wait_primary_ready(cluster, _READY_TIMEOUT_S)
    log.info("primary up on %s:%d in %.2fs", HOST, cluster.primary.port, time.monotonic() - t0)
    if not cluster.replicas:
        return

    # replicas: base backups in parallel (into the slots made by _bootstrap_roles), then configure and start them
    def basebackup_argv(n: PgNode) -> list[str]:
        conninfo = make_conninfo(
            "", host=HOST, port=cluster.primary.port, user=REPLICATION_USER, application_name=n.name
        )
        args = ["-D", str(n.data_dir), "-R", "-X", "stream", "-c", "fast", "-S", n.slot_name, "--no-sync"]
        return _argv(cluster.bindir, os_user, "pg_basebackup", *args, "--no-manifest", "-d", conninfo)

    _run_parallel(
        [(f"pg_basebackup for {n.name}", basebackup_argv(n), None) for n in cluster.replicas],
        cwd=base,
        env={"PGPASSWORD": replicator_password},  # never on the command line
        timeout=120,
    )
    for n in cluster.replicas:
        with (n.data_dir / "postgresql.auto.conf").open("a") as fh:
            fh.write(
                f"\n# --- rotator local rig: replica overrides ---\nport = {n.port}\n"
                f"unix_socket_directories = {_conf_str(str(cluster.sock_dir))}\n"
            )
    _run_parallel(
        [
            (f"starting {n.name}", _pg_ctl_start_argv(cluster, n, os_user), cluster.log_file(n))
            for n in cluster.replicas
        ],
        cwd=base,
        timeout=_START_TIMEOUT_S + 10,
    )
    for n in cluster.replicas:
        _wait_replica_ready(cluster, n, streaming=True, timeout=_READY_TIMEOUT_S)
    log.info("cluster up (%d replicas) in %.2fs", len(cluster.replicas), time.monotonic() - t0)


# --------------------------------------------------------------------------------------------------------------
# CLI


def _status_lines(cluster: PgCluster) -> list[str]:
    header = (
        f"cluster {cluster.base_dir} (db {cluster.dbname}, admin {cluster.admin_user}; "
        f"password in {cluster.base_dir / CLUSTER_FILE})"
    )
    lines = [header]
    for n in cluster.nodes:
        state = "running" if node_is_running(cluster, n) else "stopped"
        lines.append(
            f"  {n.name:<10} {n.role:<8} {n.host}:{n.port:<6} {state:<8} {cluster.dsn(n, user=cluster.admin_user)}"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rotator.local.postgres_rig", description="Local PostgreSQL primary + streaming replicas."
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("base_dir", type=Path)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--dbname", default="appdb")
    parser.add_argument("--keep", action="store_true", help="down: stop but keep the data")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "up":
            t0 = time.monotonic()
            cluster = start_cluster(args.base_dir, replicas=args.replicas, dbname=args.dbname)
            print(f"started in {time.monotonic() - t0:.2f}s")
            print("\n".join(_status_lines(cluster)))
        elif args.command == "down":
            found = load_cluster(args.base_dir)
            if found is None:
                print(f"no cluster at {args.base_dir}")
                return 0
            t0 = time.monotonic()
            stop_cluster(found, remove=not args.keep)
            print(f"stopped in {time.monotonic() - t0:.2f}s" + ("" if args.keep else " and removed"))
        else:
            found = load_cluster(args.base_dir)
            if found is None:
                print(f"no cluster at {args.base_dir}")
                return 1
            print("\n".join(_status_lines(found)))
    except RigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
