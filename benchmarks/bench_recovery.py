"""How fast the rotator gets back to the healthy end state, with production retry intervals (no time scaling).

1. A primary outage right after setSecret (testSecret finds it gone): time from the primary's return to the end of
   the execution, whose rollback then completes the rotation (rolled forward). The backoff cap (60 s) bounds it.
2. A hung replica (its postmaster SIGSTOPped) during createSecret's preflight: time from the rotation's start to the
   failed step, i.e. how long a hung endpoint takes to be declared failed.

    .venv/bin/python benchmarks/bench_recovery.py [--outage 60] [--results benchmarks/results/recovery.json]

Takes a few minutes (real sleeps). Prints the figures and writes them to the results file.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from rotator.local.aws_stack import LocalAwsStack
from rotator.local.drills import Drill, create_app
from rotator.local.faults import AwsFaults, DatabaseFaults, Injector
from rotator.local.rig import start_cluster, stop_cluster
from rotator.paths import project_root


def outage_recovery(stack: LocalAwsStack, drill: Drill, faults: Injector, outage: float) -> dict[str, float | str]:
    healed: list[float] = []

    def start() -> None:
        faults.db.refuse("primary")

        def heal() -> None:
            faults.db.heal()
            healed.append(time.time())

        faults.db.after(outage, heal)

    faults.at("resolve_endpoints.done", "testSecret", start)
    started = time.time()
    drill.rotate(heal=faults.heal, settle_timeout=outage + 600)
    test_runs = [e for e in drill.executions() if "testSecret" in e["name"]]
    ended = max(e["stopDate"].timestamp() for e in test_runs)
    alert = (drill.alerts() or [{}])[-1]
    return {
        "outage_seconds": outage,
        "rotation_seconds": round(ended - started, 1),
        "back_to_healthy_seconds": round(ended - healed[0], 1) if healed else -1.0,
        "outcome": str(alert.get("outcome")),
        "violations": len(drill.check_invariant()),
    }


def hung_endpoint(drill: Drill, faults: Injector) -> dict[str, float | str]:
    faults.db.hang("replica1")
    started = time.monotonic()
    try:
        drill.rotate(heal=lambda: None, retries=0)
    finally:
        faults.heal()
    declared = time.monotonic() - started
    return {
        "declared_failed_seconds": round(declared, 1),
        "failed_step": str(drill.attempts[0].failed_step),
        "violations": len(drill.check_invariant()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outage", type=float, default=60.0)
    parser.add_argument("--results", type=Path, default=project_root() / "benchmarks" / "results" / "recovery.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rotator-bench-recovery-") as home:
        cluster = start_cluster(Path(home) / "pg", replicas=2)
        try:
            with (
                LocalAwsStack(project_root() / "template.yaml", parameters={"RecoveryPeriodSeconds": "900"}) as stack,
                AwsFaults() as aws,
            ):
                db = DatabaseFaults(cluster)
                app = create_app(stack, cluster, prefix="rotator/bench")
                faults = Injector(db, aws, app.user)
                outage = outage_recovery(stack, Drill(stack, cluster, app), faults, args.outage)
                print(f"primary outage of {args.outage:.0f} s after setSecret: {outage}", flush=True)
                hung = hung_endpoint(Drill(stack, cluster, create_app(stack, cluster, prefix="rotator/bench")), faults)
                print(f"hung replica at createSecret: {hung}", flush=True)
        finally:
            stop_cluster(cluster, remove=True)
    results = {
        "benchmark": "recovery with production retry intervals (no time scaling)",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version()},
        "connect_timeout_seconds": 5,
        "outage_after_set_secret": outage,
        "hung_endpoint": hung,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0 if outage["violations"] == 0 and hung["violations"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
