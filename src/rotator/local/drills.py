"""Rotations under faults, driven as Secrets Manager drives them, and the invariant checked on the real databases.

Used by the fault matrix (tests/integration/test_fault_matrix.py) and `make chaos` (rotator.chaos).

The invariant, once the faults are healed and every execution of the rotation has ended:

- exactly one version is AWSCURRENT, and no AWSPENDING is left on any other version;
- AWSCURRENT's password logs in on the primary and on every replica (unless the database password was changed out
  of band: then the last alert must say so and ask for manual action);
- every replica is streaming from the primary again;
- every failed attempt published an alert whose fields agree with the labels and logins observed when it ended,
  and no alert holds a password.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from rotator.executions import secret_executions
from rotator.local.aws_stack import LocalAwsStack
from rotator.local.rig import PgCluster, PgNode
from rotator.local.rig.process import poll
from rotator.local.seed import can_log_in, can_log_in_eventually, create_login_role, secret_value

STEPS = ("createSecret", "setSecret", "testSecret", "finishSecret")


@dataclass
class App:
    """A login role on the rig and its secret."""

    name: str
    arn: str
    user: str
    password: str


def create_app(stack: LocalAwsStack, cluster: PgCluster, prefix: str = "rotator/drill") -> App:
    user = f"app_{uuid.uuid4().hex[:10]}"
    password = f"Init-{uuid.uuid4().hex}"
    create_login_role(cluster.dsn(cluster.primary), user, password)
    value = secret_value(
        _endpoint(cluster.primary), [_endpoint(r) for r in cluster.replicas], cluster.dbname, user, password
    )
    name = f"{prefix}/{user}"
    arn = stack.client("secretsmanager").create_secret(Name=name, SecretString=json.dumps(value))["ARN"]
    for node in cluster.nodes:
        if not can_log_in_eventually(_endpoint(node), cluster.dbname, user, password):
            raise RuntimeError(f"{user} does not log in on {node.name}")
    return App(name, arn, user, password)


def _endpoint(node: PgNode) -> dict[str, Any]:
    return {"host": node.host, "port": node.port}


@dataclass
class Attempt:
    """One pass over the four steps with one token."""

    token: str
    failed_step: str | None = None
    error: str | None = None


@dataclass
class Drill:
    """A rotation driven as Secrets Manager drives it: RotateSecret, then on failure the whole rotation again with
    the same token (createSecret first) after ``heal`` ran, until a pass succeeds, the rotator reports that it rolled
    the rotation back (nothing left to do for the token), or ``retries`` run out."""

    stack: LocalAwsStack
    cluster: PgCluster
    app: App
    attempts: list[Attempt] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def rotate(self, *, heal: Callable[[], None] = lambda: None, retries: int = 3, settle_timeout: float = 180) -> None:
        token = str(uuid.uuid4())
        sm = self.stack.client("secretsmanager")
        attempt = Attempt(token)
        alerted = len(self.alerts())
        try:
            sm.rotate_secret(
                SecretId=self.app.arn,
                ClientRequestToken=token,
                RotationLambdaARN=self.stack.function_arn("RotationFunction"),
                RotationRules={"AutomaticallyAfterDays": 30},
            )
        except Exception as exc:  # the ClientError names the failing step
            attempt.failed_step = next((s for s in STEPS if f"at {s}" in str(exc)), "RotateSecret")
            attempt.error = str(exc)
        self.attempts.append(attempt)
        for _ in range(retries):
            if attempt.failed_step is None:
                break
            self.wait_settled(token, settle_timeout)
            self.check_alerts(token, attempt, alerted)
            heal()
            alerted = len(self.alerts())
            attempt = self.retry(token)
            self.attempts.append(attempt)
            if attempt.error and "RotationRolledBack" in attempt.error:
                break
        heal()
        self.wait_settled(token, settle_timeout)

    def retry(self, token: str) -> Attempt:
        """What Secrets Manager does when it retries a failed rotation: every step again, in order, same token."""
        attempt = Attempt(token)
        for step in STEPS:
            event = {"Step": step, "SecretId": self.app.arn, "ClientRequestToken": token}
            result = self.stack.invoke("RotationFunction", event)
            if not result.ok:
                attempt.failed_step, attempt.error = step, f"{result.error_type}: {result.error_message}"
                break
        return attempt

    # --- settling and checking ------------------------------------------------------------------------------------
    def executions(self, token: str | None = None) -> list[dict[str, Any]]:
        sfn = self.stack.client("stepfunctions")
        return secret_executions(sfn, self.stack.state_machine_arn, self.app.arn, token)

    def wait_settled(self, token: str, timeout: float) -> None:
        """Until no execution of this rotation runs (a rollback may be waiting out an outage)."""

        def settled() -> bool | None:
            return True if all(e["status"] != "RUNNING" for e in self.executions(token)) else None

        poll(settled, timeout=timeout, interval=0.2, what="the rotation's executions to end")

    def labels(self) -> dict[str, list[str]]:
        described = self.stack.client("secretsmanager").describe_secret(SecretId=self.app.arn)
        return {v: s for v, s in described["VersionIdsToStages"].items() if s}

    def current_password(self) -> str:
        value = self.stack.client("secretsmanager").get_secret_value(SecretId=self.app.arn)["SecretString"]
        return str(json.loads(value)["password"])

    def logs_in(self, node: PgNode, password: str, *, eventually: bool = False) -> bool:
        check = can_log_in_eventually if eventually else can_log_in
        return check(_endpoint(node), self.cluster.dbname, self.app.user, password)

    def login(self, node: PgNode, password: str) -> str:
        """ok, refused (the credentials), or unreachable (a fault still holds the node): what can be concluded."""
        try:
            psycopg.connect(
                host=node.host,
                port=node.port,
                dbname=self.cluster.dbname,
                user=self.app.user,
                password=password,
                connect_timeout=3,
            ).close()
        except psycopg.OperationalError as exc:
            return "refused" if "password authentication failed" in str(exc) else "unreachable"
        return "ok"

    def alerts(self) -> list[dict[str, Any]]:
        found = []
        for message in self.stack.sns_messages():
            try:
                body = json.loads(message["Message"])
            except json.JSONDecodeError:
                body = {"raw": message["Message"]}
            if self.app.arn in message["Message"] or body.get("secretName") == self.app.name:
                found.append(body)
        return found

    def check_alerts(self, token: str, attempt: Attempt, alerted_before: int) -> None:
        """Right after an attempt failed and settled: it alerted, and the newest alert agrees with what is observable
        now. (Refusals that another execution or an earlier alert covers publish nothing, by design.)"""
        alerts = self.alerts()
        quiet = ("RotationBusy", "RotationRolledBack", "ExecutionStillRunning")
        if len(alerts) <= alerted_before:
            if not any(name in (attempt.error or "") for name in quiet):
                self.violations.append(f"{attempt.failed_step} failed ({attempt.error}) and published no alert")
            return
        alert = alerts[-1]
        labels = self.labels()
        token_labels = labels.get(token, [])
        if alert.get("pendingRemoved") and "AWSPENDING" in token_labels:
            self.violations.append(f"alert says AWSPENDING removed, but {token} still has it")
        if alert.get("outcome") == "rolled_forward" and "AWSCURRENT" not in token_labels:
            self.violations.append("alert says rolled forward, but the token is not AWSCURRENT")
        if (
            alert.get("databaseRestored") is True
            and self.login(self.cluster.primary, self.current_password()) == "refused"
        ):
            self.violations.append("alert says the database accepts AWSCURRENT, but the primary refuses it")

    def check_invariant(self, *, changed_outside: bool = False) -> list[str]:
        """The invariant (module docstring); returns the violations found (also kept in ``violations``)."""
        labels = self.labels()
        current = [v for v, s in labels.items() if "AWSCURRENT" in s]
        if len(current) != 1:
            self.violations.append(f"{len(current)} versions are AWSCURRENT: {labels}")
        stray = [v for v, s in labels.items() if "AWSPENDING" in s and "AWSCURRENT" not in s]
        if stray:
            self.violations.append(f"AWSPENDING left on {stray} (not AWSCURRENT)")
        password = self.current_password()
        # Replicas may lag a moment behind the primary: wait for them, but not for a password nobody set.
        primary_ok = self.logs_in(self.cluster.primary, password, eventually=not changed_outside)
        refusing = [] if primary_ok else [self.cluster.primary.name]
        if primary_ok:
            refusing += [n.name for n in self.cluster.replicas if not self.logs_in(n, password, eventually=True)]
        if changed_outside:
            last = self.alerts()[-1:] or [{}]
            if refusing and last[0].get("outcome") not in ("changed_outside", "secret_changed"):
                self.violations.append(f"password changed outside, but the last alert says {last[0].get('outcome')}")
        elif refusing:
            self.violations.append(f"AWSCURRENT does not log in on {refusing}")
        self.violations += replication_problems(self.cluster)
        secrets = {self.app.password, password}
        text = json.dumps(self.alerts())
        self.violations += [f"an alert holds a password ({p[:4]}…)" for p in secrets if p in text]
        return self.violations


def replication_problems(cluster: PgCluster, timeout: float = 15) -> list[str]:
    """Every replica in recovery and streaming from the primary (a write on a replica would break that)."""
    problems = []
    for node in cluster.replicas:

        def streaming(node: PgNode = node) -> bool | None:
            with psycopg.connect(cluster.dsn(node, dbname="postgres"), connect_timeout=3) as db:
                row = db.execute(
                    "SELECT pg_is_in_recovery(), (SELECT status FROM pg_stat_wal_receiver LIMIT 1)"
                ).fetchone()
            return True if row is not None and row[0] and row[1] == "streaming" else None

        try:
            poll(streaming, timeout=timeout, interval=0.2, what=f"{node.name} to stream")
        except (TimeoutError, psycopg.Error) as exc:
            problems.append(f"{node.name} is not streaming from the primary ({type(exc).__name__})")
    return problems


def seconds_since(started: float) -> float:
    return round(time.monotonic() - started, 2)
