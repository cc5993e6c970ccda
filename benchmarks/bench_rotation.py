"""Rotation latency on the local stack over real PostgreSQL, with production retry intervals.

Measures, for 0, 2 and 4 streaming replicas: the wall time of a full rotation (RotateSecret → 4 executions), each
step's execution time, and how many logins the replica waits needed; then the time from RotateSecret to the alert when
a replica is down. Prints a table and writes benchmarks/results/rotation.json. Figures, not assertions.

    make bench            # or: .venv/bin/python benchmarks/bench_rotation.py [--rotations N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from rotator.local.aws_stack import LocalAwsStack
from rotator.local.rig import PgCluster, start_cluster, stop_cluster, stop_node
from rotator.local.seed import create_login_role, secret_value

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "rotation.json"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def make_secret(stack: LocalAwsStack, cluster: PgCluster) -> str:
    user, password = f"bench_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    create_login_role(cluster.dsn(cluster.primary), user, password)
    primary = {"host": cluster.primary.host, "port": cluster.primary.port}
    replicas = [{"host": r.host, "port": r.port} for r in cluster.replicas]
    value = secret_value(primary, replicas, cluster.dbname, user, password)
    secrets = stack.client("secretsmanager")
    return str(secrets.create_secret(Name=f"rotator/bench/{user}", SecretString=json.dumps(value))["ARN"])


def executions_by_step(stack: LocalAwsStack, secret_arn: str) -> dict[str, dict[str, Any]]:
    sfn = stack.client("stepfunctions")
    found = {}
    for item in sfn.list_executions(stateMachineArn=stack.state_machine_arn)["executions"]:
        described = sfn.describe_execution(executionArn=item["executionArn"])
        execution_input = json.loads(described["input"])
        if execution_input["secretId"] == secret_arn:
            found[execution_input["step"]] = described
    return found


def bench_replicas(stack: LocalAwsStack, replicas: int, rotations: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rotator-bench-") as base:
        cluster = start_cluster(Path(base) / "pg", replicas=replicas)
        try:
            secrets = stack.client("secretsmanager")
            walls: list[float] = []
            steps: dict[str, list[float]] = {}
            attempts: list[int] = []
            for _ in range(rotations):
                arn = make_secret(stack, cluster)
                start = time.perf_counter()
                secrets.rotate_secret(
                    SecretId=arn,
                    RotationLambdaARN=stack.function_arn("RotationFunction"),
                    RotationRules={"AutomaticallyAfterDays": 30},
                )
                walls.append(time.perf_counter() - start)
                executions = executions_by_step(stack, arn)
                for step, described in executions.items():
                    steps.setdefault(step, []).append((described["stopDate"] - described["startDate"]).total_seconds())
                attempts += [r["attempts"] for r in json.loads(executions["setSecret"]["output"]).get("replicas", [])]
            # A rotation that must fail: the last replica down (or, with no replica, nothing to break: skipped).
            failure = None
            if replicas:
                arn = make_secret(stack, cluster)
                stop_node(cluster, cluster.replicas[-1])
                start = time.perf_counter()
                try:
                    secrets.rotate_secret(
                        SecretId=arn,
                        RotationLambdaARN=stack.function_arn("RotationFunction"),
                        RotationRules={"AutomaticallyAfterDays": 30},
                    )
                except ClientError:
                    failure = time.perf_counter() - start
        finally:
            stop_cluster(cluster, remove=True)
    return {
        "replicas": replicas,
        "rotations": rotations,
        "rotation_seconds": {"median": statistics.median(walls), "p95": percentile(walls, 0.95), "max": max(walls)},
        "step_seconds_median": {step: statistics.median(values) for step, values in sorted(steps.items())},
        "replica_wait_logins": {"max": max(attempts, default=0), "mean": statistics.fmean(attempts) if attempts else 0},
        "replica_down_seconds_to_failure_and_alert": failure,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rotations", type=int, default=10)
    parser.add_argument("--replicas", type=int, nargs="*", default=[0, 2, 4])
    args = parser.parse_args()
    # The functions' own logs (and moto's) go to a file so the figures stay readable.
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    log_path = RESULTS.with_suffix(".log")
    with log_path.open("w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        handler = logging.StreamHandler(log)
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.INFO)
        try:
            with LocalAwsStack(ROOT / "template.yaml", fast_retries=False) as stack:
                results = [bench_replicas(stack, replicas, args.rotations) for replicas in args.replicas]
        finally:
            logging.getLogger().removeHandler(handler)
    print(
        f"\n{'replicas':>8} {'median s':>9} {'p95 s':>7} {'create':>7} {'set':>6} {'test':>6} {'finish':>7} "
        f"{'max waits':>9} {'fail+alert s':>12}"
    )
    for r in results:
        s = r["step_seconds_median"]
        fail = r["replica_down_seconds_to_failure_and_alert"]
        print(
            f"{r['replicas']:>8} {r['rotation_seconds']['median']:>9.3f} {r['rotation_seconds']['p95']:>7.3f} "
            f"{s.get('createSecret', 0):>7.3f} {s.get('setSecret', 0):>6.3f} {s.get('testSecret', 0):>6.3f} "
            f"{s.get('finishSecret', 0):>7.3f} {r['replica_wait_logins']['max']:>9} "
            f"{(f'{fail:.2f}' if fail is not None else '-'):>12}"
        )
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "rotation latency: local stack, real PostgreSQL replicas, production retry intervals",
                "machine": {
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                    "cpus": os.cpu_count(),
                },
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwritten to {RESULTS.relative_to(ROOT)} (function logs: {log_path.relative_to(ROOT)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
