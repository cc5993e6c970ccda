"""A real PostgreSQL primary with N streaming replicas on loopback ports.

Used by ``rotator local up/down``, the integration tests, the demo and the benchmark. Everything lives under one base
directory::

    BASE/
      cluster.json        the cluster (mode 0600: it holds the admin password)
      primary/            data directory of the primary
      replica1/ ...       data directories of the replicas (pg_basebackup -R, one physical slot per replica)
      logs/<node>.log     server logs
      run/                unix socket directory (a short dir under $TMPDIR if BASE is too deep for a socket path)

Server binaries come from ``$ROTATOR_PG_BINDIR``, else the newest ``/usr/lib/postgresql/*/bin`` with ``initdb``,
else ``pg_config --bindir``. Nodes listen on 127.0.0.1 only, on free ports (never 5432).

Robustness, each learnt the hard way:

- As root, every server command runs as the ``postgres`` OS user (``$ROTATOR_PG_OS_USER`` overrides) through
  ``runuser``: initdb and postgres refuse root. When that user cannot reach BASE (pytest's 0700
  ``/tmp/pytest-of-root``), the node directories live in a private runtime dir and BASE holds symlinks to them
  (see ``process``); ``PgNode.data_dir`` is then the real path, and ``stop_cluster(remove=True)`` removes both.
- The replication slots are created on the primary before the parallel ``pg_basebackup`` runs (not by
  ``pg_basebackup -C``): otherwise one backup's checkpoint can remove a WAL segment another backup still streams.
- A unix socket path must fit in 107 bytes: a deep BASE gets its sockets in a short dir under $TMPDIR.
- Server tools never see the caller's ``PG*`` variables (a ``PGPORT=5432`` must not leak in), and the plaintext of a
  password never reaches the server: roles get SCRAM verifiers computed by libpq.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rotator.local.rig import process
from rotator.local.rig.process import HOST, RigError, poll

LOG = logging.getLogger("local_stack.rig.postgres")

CLUSTER_FILE = "cluster.json"
ADMIN_USER = "rotator_admin"
REPLICATION_USER = "replicator"
BOOTSTRAP_USER = "postgres"  # initdb's superuser; reachable only over the unix socket (trust)
ENV_BINDIR = "ROTATOR_PG_BINDIR"
ENV_OS_USER = "ROTATOR_PG_OS_USER"
_RUNTIME_PREFIX = "rotator-pg-"
_START_TIMEOUT_S = 60.0
_READY_TIMEOUT_S = 30.0


class PgNode(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    role: Literal["primary", "replica"]
    host: str
    port: int
    data_dir: Path

    @property
    def slot_name(self) -> str:
        """Physical replication slot of this node (replicas only)."""
        return self.name


class PgCluster(BaseModel):
    model_config = ConfigDict(frozen=True)

    base_dir: Path
    bindir: Path
    primary: PgNode
    replicas: tuple[PgNode, ...]
    dbname: str
    admin_user: str
    admin_password: str = Field(repr=False)
    replicator_password: str = Field(repr=False)
    os_user: str | None  # the servers' OS user when started by root; None: the caller
    runtime_dir: Path | None  # where the node dirs really live (see the module docstring); None: base_dir
    socket_dir: Path | None  # None: RUN_DIR/run

    @property
    def nodes(self) -> tuple[PgNode, ...]:
        return (self.primary, *self.replicas)

    @property
    def run_dir(self) -> Path:
        """The directory holding the node dirs, logs/ and run/: base_dir, or the private runtime dir."""
        return self.runtime_dir if self.runtime_dir is not None else self.base_dir

    @property
    def sock_dir(self) -> Path:
        return self.socket_dir if self.socket_dir is not None else self.run_dir / "run"

    @property
    def logs_dir(self) -> Path:
        return self.run_dir / "logs"

    def log_file(self, node: PgNode) -> Path:
        return self.logs_dir / f"{node.name}.log"

    def dsn(self, node: PgNode, user: str | None = None, password: str | None = None, dbname: str | None = None) -> str:
        """libpq conninfo for ``node`` over TCP; user/password/dbname default to the admin role and the app database.
        When ``user`` is given without ``password``, no password is put in the string."""
        if user is None:
            user, password = self.admin_user, password if password is not None else self.admin_password
        params: dict[str, Any] = {"host": node.host, "port": node.port, "user": user, "dbname": dbname or self.dbname}
        if password is not None:
            params["password"] = password
        return make_conninfo("", **params)


# --- binaries and commands ---------------------------------------------------------------------------------------


def find_bindir() -> Path:
    """The PostgreSQL server binaries (see the module docstring for the order)."""
    if os.environ.get(ENV_BINDIR):
        path = Path(os.environ[ENV_BINDIR])
        if not (path / "initdb").is_file():
            raise RigError(f"${ENV_BINDIR}={path} has no initdb")
        return path

    def version(bindir: str) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", Path(bindir).parent.name)) or (0,)

    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if (Path(candidate) / "initdb").is_file():
            return Path(candidate)
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            out = subprocess.run([pg_config, "--bindir"], check=True, capture_output=True, text=True, timeout=10)
            if (Path(out.stdout.strip()) / "initdb").is_file():
                return Path(out.stdout.strip())
    raise RigError(
        "PostgreSQL server binaries not found: set $ROTATOR_PG_BINDIR to a directory holding initdb, pg_ctl and "
        "pg_basebackup, or install them (Debian: apt-get install postgresql)"
    )


def _server_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment minus every PG* variable."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")} | {"LC_MESSAGES": "C"} | dict(extra or {})


def _tool(cluster: PgCluster, tool: str, *args: str) -> list[str]:
    return process.as_user(cluster.os_user, [str(cluster.bindir / tool), *args])


def _conf_str(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


# --- state -------------------------------------------------------------------------------------------------------


def node_is_running(cluster: PgCluster, node: PgNode) -> bool:
    """True when the node's postmaster (per its postmaster.pid) is alive."""
    try:
        pid = int((node.data_dir / "postmaster.pid").read_text().split("\n", 1)[0].strip())
    except (OSError, ValueError):
        return False
    return process.pid_alive(pid)


def load_cluster(base_dir: Path) -> PgCluster | None:
    """The cluster described by BASE/cluster.json, or None when there is none."""
    path = Path(base_dir) / CLUSTER_FILE
    try:
        return PgCluster.model_validate_json(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError) as exc:
        raise RigError(f"cannot read {path}: {exc}") from exc


# --- SQL -----------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _connect(conninfo: str, *, timeout: int = 5) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=timeout) as connection:
        yield connection


def _scalar(conninfo: str, query: str, params: tuple[Any, ...] = ()) -> Any:
    with _connect(conninfo, timeout=2) as connection:
        row = connection.execute(query, params).fetchone()
        assert row is not None
        return row[0]


def _bootstrap_roles(cluster: PgCluster) -> None:
    conninfo = make_conninfo(
        "", host=str(cluster.sock_dir), port=cluster.primary.port, user=BOOTSTRAP_USER, dbname="postgres"
    )
    with _connect(conninfo) as connection:

        def verifier(user: str, password: str) -> sql.Literal:
            # Computed by libpq on the client: the plaintext never reaches the server.
            scram = connection.pgconn.encrypt_password(password.encode(), user.encode(), b"scram-sha-256")
            return sql.Literal(scram.decode())

        admin, replicator = sql.Identifier(cluster.admin_user), sql.Identifier(REPLICATION_USER)
        connection.execute(
            sql.SQL("CREATE ROLE {} WITH LOGIN SUPERUSER CREATEROLE CREATEDB PASSWORD {}").format(
                admin, verifier(cluster.admin_user, cluster.admin_password)
            )
        )
        connection.execute(
            sql.SQL("CREATE ROLE {} WITH LOGIN REPLICATION PASSWORD {}").format(
                replicator, verifier(REPLICATION_USER, cluster.replicator_password)
            )
        )
        connection.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(cluster.dbname), admin))
        # Reserving WAL now, before the parallel base backups (see the module docstring).
        for replica in cluster.replicas:
            connection.execute("SELECT pg_create_physical_replication_slot(%s, true)", (replica.slot_name,))


def _wait_primary_ready(cluster: PgCluster) -> None:
    def ready() -> bool | None:
        if _scalar(cluster.dsn(cluster.primary, dbname="postgres"), "SELECT pg_is_in_recovery()"):
            raise RigError("primary is in recovery")
        return True

    poll(ready, timeout=_READY_TIMEOUT_S, what="primary to accept connections", ignore=(psycopg.Error,))


def _wait_replica_ready(cluster: PgCluster, node: PgNode, *, streaming: bool) -> None:
    query = "SELECT pg_is_in_recovery(), (SELECT status FROM pg_stat_wal_receiver LIMIT 1)"

    def ready() -> bool | None:
        with _connect(cluster.dsn(node, dbname="postgres"), timeout=2) as connection:
            row = connection.execute(query).fetchone()
        assert row is not None
        if not row[0]:
            raise RigError(f"{node.name} is up but not in recovery (promoted?)")
        return True if row[1] == "streaming" or not streaming else None

    what = f"{node.name} to be {'streaming' if streaming else 'in recovery'}"
    poll(ready, timeout=_READY_TIMEOUT_S, what=what, ignore=(psycopg.Error,))


def wait_replicas_caught_up(cluster: PgCluster, timeout: float = 10.0) -> None:
    """Wait until every running replica has replayed up to the primary's current WAL LSN."""
    target = str(_scalar(cluster.dsn(cluster.primary, dbname="postgres"), "SELECT pg_current_wal_lsn()::text"))
    deadline = time.monotonic() + timeout
    for node in cluster.replicas:
        if not node_is_running(cluster, node):
            continue
        conninfo = cluster.dsn(node, dbname="postgres")

        def caught_up(conninfo: str = conninfo) -> bool | None:
            return bool(_scalar(conninfo, "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,))) or None

        remaining = max(0.0, deadline - time.monotonic())
        poll(caught_up, timeout=remaining, what=f"{node.name} to replay up to {target}", ignore=(psycopg.Error,))


# --- nodes ---------------------------------------------------------------------------------------------------------


def _start_argv(cluster: PgCluster, node: PgNode) -> list[str]:
    log_file = str(cluster.log_file(node))
    return _tool(cluster, "pg_ctl", "-D", str(node.data_dir), "-l", log_file, "-w", "-t", "60", "start")


def _stop_argv(cluster: PgCluster, node: PgNode, immediate: bool) -> list[str]:
    mode = "immediate" if immediate else "fast"
    return _tool(cluster, "pg_ctl", "-D", str(node.data_dir), "-m", mode, "-w", "-t", "60", "stop")


def start_node(cluster: PgCluster, node: PgNode) -> None:
    """Start a stopped node and wait until it serves (a replica: in recovery, and streaming if the primary runs)."""
    if node_is_running(cluster, node):
        raise RigError(f"{node.name} is already running")
    process.make_owned_dir(cluster.sock_dir, cluster.os_user)
    process.run(
        _start_argv(cluster, node),
        cwd=cluster.base_dir,
        env=_server_env(),
        what=f"starting {node.name}",
        log_file=cluster.log_file(node),
        timeout=_START_TIMEOUT_S + 10,
    )
    if node.role == "primary":
        _wait_primary_ready(cluster)
    else:
        _wait_replica_ready(cluster, node, streaming=node_is_running(cluster, cluster.primary))


def stop_node(cluster: PgCluster, node: PgNode, immediate: bool = False) -> None:
    """Stop one node (fast shutdown, or immediate = crash-like). A node that is not running is left alone."""
    if node_is_running(cluster, node):
        process.run(
            _stop_argv(cluster, node, immediate),
            cwd=cluster.base_dir,
            env=_server_env(),
            what=f"stopping {node.name}",
            log_file=cluster.log_file(node),
            timeout=70,
        )


def stop_cluster(cluster: PgCluster, remove: bool = True) -> None:
    """Stop every node (stopped ones are skipped), replicas first; remove every directory of the rig if ``remove``."""
    running = [node for node in cluster.replicas if node_is_running(cluster, node)]
    if running:
        jobs = [(f"stopping {n.name}", _stop_argv(cluster, n, False), cluster.log_file(n)) for n in running]
        process.run_parallel(jobs, cwd=cluster.base_dir, env=_server_env(), timeout=70)
    stop_node(cluster, cluster.primary)
    if remove:
        still = [node.name for node in cluster.nodes if node_is_running(cluster, node)]
        if still:
            raise RigError(f"not removing {cluster.base_dir}: {', '.join(still)} still running")
        process.remove_dirs(cluster.base_dir, cluster.runtime_dir, cluster.socket_dir)


# --- creation ------------------------------------------------------------------------------------------------------


def start_cluster(base_dir: Path, replicas: int = 2, dbname: str = "appdb") -> PgCluster:
    """Create and start a fresh primary + ``replicas`` streaming replicas under ``base_dir``.

    Raises RigError if ``base_dir`` holds a running cluster, or a non-empty directory that is not a rig. A stopped
    rig left in ``base_dir`` is replaced. On failure the nodes started so far are stopped and the directory (with
    its logs) is kept for inspection; the next start_cluster replaces it.
    """
    if replicas < 0:
        raise RigError("replicas must be >= 0")
    base_dir = Path(base_dir).absolute()
    cluster = _describe_new_cluster(base_dir, replicas, dbname)
    # written first, so a half-started rig can always be cleaned up by `down`
    process.write_json(base_dir / CLUSTER_FILE, cluster.model_dump(mode="json"))
    try:
        started = time.monotonic()
        _make_dirs(cluster)
        _init_primary(cluster)
        LOG.info("primary up on %s:%d in %.2fs", HOST, cluster.primary.port, time.monotonic() - started)
        if cluster.replicas:
            _start_replicas(cluster)
            LOG.info("cluster up (%d replicas) in %.2fs", len(cluster.replicas), time.monotonic() - started)
    except BaseException:
        with contextlib.suppress(Exception):
            stop_cluster(cluster, remove=False)
        raise
    return cluster


def _describe_new_cluster(base_dir: Path, replicas: int, dbname: str) -> PgCluster:
    bindir = find_bindir()
    os_user = process.server_os_user(ENV_OS_USER, "postgres", "PostgreSQL")
    _clear_base_dir(base_dir)
    base_dir.mkdir(parents=True, exist_ok=True)
    runtime_dir = process.private_runtime_dir(base_dir, os_user, _RUNTIME_PREFIX)
    run_dir = runtime_dir or base_dir
    ports = process.free_ports(1 + replicas)
    return PgCluster(
        base_dir=base_dir,
        bindir=bindir,
        primary=PgNode(name="primary", role="primary", host=HOST, port=ports[0], data_dir=run_dir / "primary"),
        replicas=tuple(
            PgNode(name=f"replica{i}", role="replica", host=HOST, port=ports[i], data_dir=run_dir / f"replica{i}")
            for i in range(1, replicas + 1)
        ),
        dbname=dbname,
        admin_user=ADMIN_USER,
        admin_password=secrets.token_urlsafe(24),
        replicator_password=secrets.token_urlsafe(24),
        os_user=os_user,
        runtime_dir=runtime_dir,
        socket_dir=process.short_socket_dir(run_dir, ".s.PGSQL.65535", _RUNTIME_PREFIX),
    )


def _clear_base_dir(base_dir: Path) -> None:
    existing = load_cluster(base_dir) if base_dir.exists() else None
    if existing is not None:
        running = [node.name for node in existing.nodes if node_is_running(existing, node)]
        if running:
            raise RigError(f"{base_dir} holds a running cluster ({', '.join(running)}); stop it first")
        LOG.info("removing stale stopped cluster at %s", base_dir)
        stop_cluster(existing, remove=True)
    elif base_dir.exists() and any(base_dir.iterdir()):
        raise RigError(f"{base_dir} is not empty and holds no {CLUSTER_FILE}; refusing to overwrite it")


def _make_dirs(cluster: PgCluster) -> None:
    process.make_owned_dir(cluster.logs_dir, cluster.os_user, 0o750)
    process.make_owned_dir(cluster.sock_dir, cluster.os_user)
    for node in cluster.nodes:
        process.make_owned_dir(node.data_dir, cluster.os_user)
    if cluster.runtime_dir is not None:
        for name in [*(node.name for node in cluster.nodes), "logs", "run"]:
            (cluster.base_dir / name).symlink_to(cluster.runtime_dir / name, target_is_directory=True)


_PRIMARY_CONF = {
    "listen_addresses": _conf_str(HOST),
    "unix_socket_permissions": "0700",
    "fsync": "off",
    "full_page_writes": "off",
    "password_encryption": _conf_str("scram-sha-256"),
    "wal_level": "replica",
    "wal_keep_size": _conf_str("64MB"),
    "hot_standby": "on",
    "wal_receiver_status_interval": _conf_str("1s"),
    "shared_buffers": _conf_str("32MB"),
    "max_connections": "100",
    "log_statement": _conf_str("none"),
    "log_min_error_statement": "panic",  # a failed statement's text is never logged: it may hold a password
    "log_line_prefix": _conf_str("%m [%p] %q%u@%d "),
    "ssl": "off",
}

_HBA = f"""\
# rotator local rig: bootstrap superuser over the unix socket only; everything else SCRAM over loopback TCP
local   all          {BOOTSTRAP_USER}                     trust
local   replication  {BOOTSTRAP_USER}                     trust
host    replication  {REPLICATION_USER}   127.0.0.1/32      scram-sha-256
host    all          all      127.0.0.1/32      scram-sha-256
"""


def _node_conf(cluster: PgCluster, node: PgNode, settings: Mapping[str, str] | None = None) -> str:
    lines = [f"port = {node.port}", f"unix_socket_directories = {_conf_str(str(cluster.sock_dir))}"]
    lines += [f"{key} = {value}" for key, value in (settings or {}).items()]
    return "\n# --- rotator local rig ---\n" + "\n".join(lines) + "\n"


def _init_primary(cluster: PgCluster) -> None:
    primary = cluster.primary
    initdb = ["-U", BOOTSTRAP_USER, "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"]
    env = _server_env()
    initdb_argv = _tool(cluster, "initdb", "-D", str(primary.data_dir), *initdb)
    process.run(initdb_argv, cwd=cluster.base_dir, env=env, what="initdb")
    senders = str(len(cluster.replicas) + 5)
    settings = _PRIMARY_CONF | {"max_wal_senders": senders, "max_replication_slots": senders}
    with (primary.data_dir / "postgresql.conf").open("a") as conf:
        conf.write(_node_conf(cluster, primary, settings))
    (primary.data_dir / "pg_hba.conf").write_text(_HBA)
    process.run(
        _start_argv(cluster, primary),
        cwd=cluster.base_dir,
        env=env,
        what="starting primary",
        log_file=cluster.log_file(primary),
        timeout=_START_TIMEOUT_S + 10,
    )
    _bootstrap_roles(cluster)
    _wait_primary_ready(cluster)


def _start_replicas(cluster: PgCluster) -> None:
    """Base backups in parallel (into the slots made by _bootstrap_roles), then configure and start them."""

    def basebackup(node: PgNode) -> list[str]:
        source = make_conninfo(
            "", host=HOST, port=cluster.primary.port, user=REPLICATION_USER, application_name=node.name
        )
        args = ["-D", str(node.data_dir), "-R", "-X", "stream", "-c", "fast", "-S", node.slot_name, "--no-sync"]
        return _tool(cluster, "pg_basebackup", *args, "--no-manifest", "-d", source)

    process.run_parallel(
        [(f"pg_basebackup for {node.name}", basebackup(node), None) for node in cluster.replicas],
        cwd=cluster.base_dir,
        env=_server_env({"PGPASSWORD": cluster.replicator_password}),  # never on the command line
    )
    for node in cluster.replicas:
        with (node.data_dir / "postgresql.auto.conf").open("a") as conf:
            conf.write(_node_conf(cluster, node))
    process.run_parallel(
        [(f"starting {node.name}", _start_argv(cluster, node), cluster.log_file(node)) for node in cluster.replicas],
        cwd=cluster.base_dir,
        env=_server_env(),
        timeout=_START_TIMEOUT_S + 10,
    )
    for node in cluster.replicas:
        _wait_replica_ready(cluster, node, streaming=True)
