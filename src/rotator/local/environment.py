"""`rotator local up|down|status`: a real PostgreSQL primary with streaming replicas, and the local AWS stack running
our template and handlers in a background process. Everything lives under one home directory."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from rotator.local.rig import PgCluster, load_cluster, start_cluster, stop_cluster
from rotator.local.rig.process import pid_alive, poll

STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


class LocalStackError(RuntimeError):
    pass


class LocalEnvironment:
    def __init__(self, home: Path, project_root: Path) -> None:
        self.home = home
        self.project_root = project_root
        self.postgres_dir = home / "postgres"
        self.aws_state_file = home / "aws.json"
        self.pid_file = home / "aws.pid"
        self.log_file = home / "aws.log"

    # --- queries ----------------------------------------------------------------------------------------------------
    def _daemon_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def cluster(self) -> PgCluster | None:
        return load_cluster(self.postgres_dir)

    def status(self) -> dict[str, Any] | None:
        """The documented `rotator local status --json` shape, plus the stack's ARNs; None when nothing runs."""
        cluster = self.cluster()
        pid = self._daemon_pid()
        if cluster is None or pid is None or not self.aws_state_file.exists():
            return None
        aws = json.loads(self.aws_state_file.read_text())
        return {
            "aws_endpoint": aws["aws_endpoint"],
            "lambda_endpoint": aws["lambda_endpoint"],
            "region": aws["region"],
            "account_id": aws["account_id"],
            "state_machine_arn": aws["state_machine_arn"],
            "topic_arn": aws["topic_arn"],
            "rotation_function_arn": aws["functions"]["RotationFunction"],
            "functions": aws["functions"],
            "postgres": {
                "primary": {"host": cluster.primary.host, "port": cluster.primary.port},
                "replicas": [{"host": r.host, "port": r.port} for r in cluster.replicas],
                "dbname": cluster.dbname,
                "admin": {"username": cluster.admin_user, "password": cluster.admin_password},
            },
            "pid": pid,
            "log_file": str(self.log_file),
            "home": str(self.home),
        }

    # --- lifecycle --------------------------------------------------------------------------------------------------
    def up(self, replicas: int = 2) -> dict[str, Any]:
        if self.status() is not None:
            raise LocalStackError(f"the local stack is already running (home {self.home}); `rotator local down` first")
        self.down(quiet=True)  # leftovers of a crashed run
        self.home.mkdir(parents=True, exist_ok=True)
        start_cluster(self.postgres_dir, replicas=replicas)
        try:
            self._start_daemon()
        except BaseException:
            self.down(quiet=True)
            raise
        status = self.status()
        assert status is not None
        return status

    def _start_daemon(self) -> None:
        argv = [sys.executable, "-m", "rotator.local.daemon", "--state-file", str(self.aws_state_file)]
        argv += ["--template", str(self.project_root / "template.yaml")]
        with self.log_file.open("ab") as log:
            daemon = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.project_root,
                start_new_session=True,
            )
        self.pid_file.write_text(str(daemon.pid))

        def ready() -> bool | None:
            if daemon.poll() is not None:
                raise LocalStackError(f"the local AWS stack exited during start-up; see {self.log_file}")
            return self.aws_state_file.exists() or None

        try:
            poll(ready, timeout=STARTUP_TIMEOUT, interval=0.1, what="the local AWS stack")
        except TimeoutError:
            daemon.terminate()
            raise LocalStackError(
                f"the local AWS stack did not start in {STARTUP_TIMEOUT:.0f} s; see {self.log_file}"
            ) from None

    def down(self, *, quiet: bool = False) -> bool:
        """Stop everything `up` started. Returns whether anything was running."""
        stopped = False
        pid = self._daemon_pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                poll(lambda: self._daemon_pid() is None or None, timeout=STOP_TIMEOUT, interval=0.1, what="the stop")
            if self._daemon_pid() is not None:
                os.kill(pid, signal.SIGKILL)
            stopped = True
        self.pid_file.unlink(missing_ok=True)
        self.aws_state_file.unlink(missing_ok=True)
        cluster = self.cluster()
        if cluster is not None:
            stop_cluster(cluster, remove=True)
            stopped = True
        if not stopped and not quiet:
            print("nothing was running", file=sys.stderr)
        return stopped
