"""`make chaos`: many rotations on the real rig, each with a random fault at a random point, and the invariant checked
after each one (rotator.local.drills). Prints the violations; exit 1 if there is any.

    python -m rotator.chaos --rotations 500 [--seed N] [--results benchmarks/results/chaos.json]

It runs its own rig (a primary and 2 streaming replicas) and the local stack in this process, with the state
machine's retries 60x faster, as the tests do: a second here stands for a minute of production backoff. The test
suite runs a short run of it (tests/integration/test_chaos.py).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rotator.local.aws_stack import LocalAwsStack
from rotator.local.drills import Drill, create_app
from rotator.local.faults import AwsFaults, DatabaseFaults, Injector, TaskDied
from rotator.local.rig import PgCluster, start_cluster, stop_cluster
from rotator.paths import project_root

# Shortened like the tests' (tests/conftest.py): 45 s of recovery period stand for 45 minutes.
PARAMETERS = {"RecoveryPeriodSeconds": "45", "DatabaseConnectTimeoutSeconds": "2"}
POINTS = {
    "createSecret": ["resolve_endpoints.done", "check_current.done"],
    "setSecret": ["resolve_endpoints.done", "set_password.after_write", "verify_pending_login.done"],
    "testSecret": ["resolve_endpoints.done", "verify_pending_login.done"],
    "finishSecret": ["resolve_endpoints.done", "promote.before_move", "promote.after_move"],
}
ROLLBACK_POINTS = ["rollback.after_database", "rollback.done"]
NODES = ["primary", "replica1", "replica2"]


@dataclass
class Planned:
    """A fault chosen for one rotation, as it reads in the report."""

    kind: str
    where: str
    changed_outside: bool = False
    may_lose_alert: bool = False


def plan(rng: random.Random, faults: Injector) -> Planned:
    """Arm one random fault; returns what was armed."""
    step = rng.choice(list(POINTS))
    point = rng.choice(POINTS[step])
    node = rng.choice(NODES)
    where = f"{step}/{point}"
    kinds: dict[str, Callable[[], Planned]] = {
        "none": lambda: Planned("none", "-"),
        "refused": lambda: _arm(faults, point, step, faults.refused(node), Planned("refused", f"{where} {node}")),
        "outage": lambda: _outage(rng, faults, point, step, node, where, hang=False),
        "hung": lambda: _outage(rng, faults, point, step, node, where, hang=True),
        "task dies": lambda: _arm(faults, point, step, TaskDied("chaos"), Planned("task dies", where)),
        "throttled": lambda: _arm(
            faults, point, step, faults.sm("get_secret_value", rng.choice([2, 4, 40])), Planned("throttled", where)
        ),
        "label 5xx": lambda: _arm(
            faults,
            point,
            step,
            faults.sm("update_secret_version_stage", rng.choice([2, 40]), "InternalServiceError"),
            Planned("label 5xx", where),
        ),
        "password changed outside": lambda: _arm(
            faults, point, step, faults.out_of_band_password(), Planned("password changed outside", where, True)
        ),
        "rollback dies": lambda: _rollback_dies(rng, faults, node),
        "sns down": lambda: _sns(rng, faults, node),
        "down before": lambda: _down_before(faults, node),
    }
    return kinds[rng.choice(list(kinds))]()


def _arm(faults: Injector, point: str, step: str, fault: Any, planned: Planned) -> Planned:
    faults.at(point, step, fault)
    return planned


def _outage(
    rng: random.Random, faults: Injector, point: str, step: str, node: str, where: str, *, hang: bool
) -> Planned:
    seconds = rng.choice([1, 3, 5, 8])
    faults.at(point, step, faults.outage(node, seconds, hang=hang))
    return Planned("hung" if hang else "outage", f"{where} {node} {seconds} min")


def _rollback_dies(rng: random.Random, faults: Injector, node: str) -> Planned:
    replica = rng.choice(NODES[1:])
    faults.at("set_password.after_write", "setSecret", faults.refused(replica))
    point = rng.choice(ROLLBACK_POINTS)
    faults.at(point, "setSecret", TaskDied("chaos"))
    return Planned("rollback dies", f"setSecret/{point} after {replica} refused")


def _sns(rng: random.Random, faults: Injector, node: str) -> Planned:
    times = rng.choice([2, 10_000])
    faults.db.refuse(rng.choice(NODES[1:]))
    faults.aws.sns(times)
    return Planned("sns down", f"{times} publishes", may_lose_alert=times > 100)


def _down_before(faults: Injector, node: str) -> Planned:
    faults.db.refuse(node)
    return Planned("down before", node)


@dataclass
class Report:
    rotations: int = 0
    failed_first: int = 0
    healed_by_retry: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    violations: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "rotations": self.rotations,
            "first_attempt_failed": self.failed_first,
            "faults": dict(self.kinds),
            "alert_outcomes": dict(self.outcomes),
            "violations": self.violations,
            "seconds": round(self.seconds, 1),
        }


def run(stack: LocalAwsStack, cluster: PgCluster, rotations: int, seed: int, progress: bool = False) -> Report:
    """``rotations`` drills on a running stack and rig; the report of what happened and what broke."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible schedule, not a secret
    report = Report()
    started = time.monotonic()
    db = DatabaseFaults(cluster)
    with AwsFaults() as aws:
        apps = [create_app(stack, cluster, prefix="rotator/chaos") for _ in range(3)]
        for number in range(1, rotations + 1):
            app = rng.choice(apps)
            faults = Injector(db, aws, app.user)
            planned = plan(rng, faults)
            drill = Drill(stack, cluster, app)
            try:
                drill.rotate(heal=faults.heal)
                violations = drill.check_invariant(changed_outside=planned.changed_outside)
            finally:
                faults.heal()
            if planned.may_lose_alert:
                violations = [v for v in violations if "published no alert" not in v]
            report.rotations += 1
            report.kinds[planned.kind] += 1
            report.failed_first += drill.attempts[0].failed_step is not None
            report.outcomes.update(
                str(a.get("outcome", "raw")) for a in drill.alerts()[-1:] if drill.attempts[0].failed_step
            )
            if violations:
                report.violations.append({"rotation": number, "fault": planned.__dict__, "violations": violations})
            if planned.changed_outside:
                apps[apps.index(app)] = create_app(stack, cluster, prefix="rotator/chaos")  # its password is lost
            if progress:
                mark = "✗" if violations else "✓"
                print(f"{mark} {number:4d} {planned.kind:<26} {planned.where}", flush=True)
    report.seconds = time.monotonic() - started
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rotator.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rotations", type=int, default=500)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--results", type=Path, default=project_root() / "benchmarks" / "results" / "chaos.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rotator-chaos-") as home:
        cluster = start_cluster(Path(home) / "pg", replicas=2)
        try:
            with LocalAwsStack(project_root() / "template.yaml", parameters=PARAMETERS, fast_retries=True) as stack:
                report = run(stack, cluster, args.rotations, args.seed, progress=True)
        finally:
            stop_cluster(cluster, remove=True)
    summary = report.summary() | {
        "seed": args.seed,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": _cpus()},
        "time_scale": "state machine retries 60x faster; recovery period 45 s (stands for 45 min)",
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "violations"}, indent=2))
    for violation in report.violations:
        print(f"VIOLATION {json.dumps(violation)}")
    print(f"{report.rotations} rotations, {len(report.violations)} with violations ({args.results})")
    return 1 if report.violations else 0


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    sys.exit(main())
