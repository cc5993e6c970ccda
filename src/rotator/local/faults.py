"""Faults for the fault matrix and `make chaos`, injected by real means or through the tasks' documented seam.

- databases: a node refused (stopped), hung (its postmaster SIGSTOPped: logins hang until connect_timeout), or its
  user's password changed out of band (ALTER ROLE by the admin);
- tasks: ``handlers.tasks.faults`` (the seam) runs a fault at a named checkpoint, e.g. right after set_password's
  change reached the database; ``TaskDied`` stands for the Lambda process dying there (``Runtime.ExitError``);
- AWS: Secrets Manager answering ThrottlingException or a 5xx for a while, SNS refusing to publish.

Everything runs in the local stack's process, where the handlers run: ``LocalAwsStack`` must be started.
"""

from __future__ import annotations

import os
import signal
import threading
import uuid
from collections.abc import Callable
from contextlib import suppress
from typing import Any
from unittest import mock

import psycopg
from psycopg import sql

from rotator.local.rig import PgCluster, PgNode, node_is_running, start_node, stop_node


class TaskDied(Exception):
    """The Lambda process dying mid-task: the local runtime reports it as Lambda does."""

    lambda_error_type = "Runtime.ExitError"


def task_faults() -> Any:
    """The tasks' fault seam, from the handlers module the local stack runs."""
    import handlers.tasks

    return handlers.tasks.faults


def _postmaster_pid(node: PgNode) -> int:
    return int((node.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])


class DatabaseFaults:
    """Faults on a rig's nodes, all undone by ``heal``."""

    def __init__(self, cluster: PgCluster) -> None:
        self.cluster = cluster
        self._hung: dict[str, int] = {}
        self._lock = threading.Lock()

    def node(self, name: str) -> PgNode:
        return next(node for node in self.cluster.nodes if node.name == name)

    def refuse(self, name: str) -> None:
        """Stop the node: connections are refused (a failover, a reboot)."""
        node = self.node(name)
        if node_is_running(self.cluster, node):
            stop_node(self.cluster, node, immediate=True)

    def hang(self, name: str) -> None:
        """Freeze the postmaster: TCP connects, the login never answers."""
        node = self.node(name)
        with self._lock:
            if name not in self._hung and node_is_running(self.cluster, node):
                pid = _postmaster_pid(node)
                os.kill(pid, signal.SIGSTOP)
                self._hung[name] = pid

    def change_password(self, user: str, password: str) -> None:
        """What an operator's ALTER ROLE outside the rotation does."""
        with psycopg.connect(self.cluster.dsn(self.cluster.primary), autocommit=True, connect_timeout=5) as db:
            db.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(user), sql.Literal(password)))

    def heal(self) -> None:
        """Every node running and answering again (primary first, so replicas stream when they start)."""
        with self._lock:
            hung, self._hung = self._hung, {}
        for pid in hung.values():
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        for node in self.cluster.nodes:
            if not node_is_running(self.cluster, node):
                start_node(self.cluster, node)

    def after(self, seconds: float, action: Callable[[], None]) -> threading.Timer:
        timer = threading.Timer(seconds, action)
        timer.daemon = True
        timer.start()
        return timer


class AwsFaults:
    """Secrets Manager and SNS answering errors on demand, while installed (a context manager).

    ``secrets_manager("get_secret_value", 5)`` makes the next five GetSecretValue calls fail with ThrottlingException
    (``code="InternalServiceError"``: a 5xx); the SDK's standard retries see each failure. ``sns(3)``: the next three
    publishes fail. A task checkpoint can call these, to fail AWS exactly while a given task runs."""

    METHODS = ("describe_secret", "get_secret_value", "put_secret_value", "update_secret_version_stage")

    def __init__(self) -> None:
        self._budget: dict[str, tuple[int, str]] = {}
        self._lock = threading.Lock()
        self._patches: list[Any] = []

    def secrets_manager(self, method: str, times: int, code: str = "ThrottlingException") -> None:
        if method not in self.METHODS:
            raise ValueError(f"no fault for {method}")
        with self._lock:
            self._budget[method] = (times, code)

    def sns(self, times: int) -> None:
        with self._lock:
            self._budget["publish"] = (times, "InternalError")

    def clear(self) -> None:
        with self._lock:
            self._budget.clear()

    def _take(self, method: str) -> str | None:
        with self._lock:
            times, code = self._budget.get(method, (0, ""))
            if times <= 0:
                return None
            self._budget[method] = (times - 1, code)
            return code

    def _wrap(self, method: str, original: Callable[..., Any], error: Callable[[str], Exception]) -> Any:
        def patched(backend: Any, *args: Any, **kwargs: Any) -> Any:
            code = self._take(method)
            if code is not None:
                raise error(code)
            return original(backend, *args, **kwargs)

        return patched

    def __enter__(self) -> AwsFaults:
        from moto.core.exceptions import JsonRESTError
        from moto.secretsmanager.models import SecretsManagerBackend
        from moto.sns.exceptions import InternalError
        from moto.sns.models import SNSBackend

        def secrets_error(code: str) -> Exception:
            failure = JsonRESTError(code, "injected by the fault matrix")
            failure.code = 500 if code == "InternalServiceError" else 400
            return failure

        for method in self.METHODS:
            wrapped = self._wrap(method, getattr(SecretsManagerBackend, method), secrets_error)
            self._patches.append(mock.patch.object(SecretsManagerBackend, method, wrapped))
        wrapped = self._wrap("publish", SNSBackend.publish, lambda code: InternalError("injected by the fault matrix"))
        self._patches.append(mock.patch.object(SNSBackend, "publish", wrapped))
        for patch in self._patches:
            patch.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for patch in reversed(self._patches):
            patch.stop()
        self._patches.clear()
        self.clear()


class Injector:
    """One drill's faults: the database's, AWS's and the tasks' seam, armed by name and all healed together."""

    def __init__(self, db: DatabaseFaults, aws: AwsFaults, user: str) -> None:
        self.db = db
        self.aws = aws
        self.tasks = task_faults()
        self.user = user

    def heal(self) -> None:
        self.tasks.clear()
        self.aws.clear()
        self.db.heal()

    def at(self, point: str, step: str, fault: BaseException | Callable[[], None], times: int = 1) -> None:
        """Run ``fault`` when the task reaches ``point`` during ``step`` (raise it, or call it)."""
        from rotator_core.models import RotationStep

        self.tasks.arm(point, fault, step=RotationStep(step), times=times)

    def outage(self, node: str, seconds: float, *, hang: bool = False) -> Callable[[], None]:
        """A fault that starts when called and heals by itself ``seconds`` later."""

        def start() -> None:
            (self.db.hang if hang else self.db.refuse)(node)
            self.db.after(seconds, self.db.heal)

        return start

    def refused(self, node: str) -> Callable[[], None]:
        """A node stops when called, until the next heal."""
        return lambda: self.db.refuse(node)

    def out_of_band_password(self) -> Callable[[], None]:
        return lambda: self.db.change_password(self.user, f"Oob-{uuid.uuid4().hex}")

    def sm(self, method: str, times: int, code: str = "ThrottlingException") -> Callable[[], None]:
        """Secrets Manager's ``method`` fails for the next ``times`` calls, from when it is called."""
        return lambda: self.aws.secrets_manager(method, times, code)
