"""Run the local AWS stack in the foreground until SIGTERM/SIGINT.

    python -m rotator.local.daemon --state-file PATH [--aws-port N] [--lambda-port N] [--template template.yaml]
                                   [--parameter-overrides Key=Value ...] [--fast-retries] [--log-level INFO]

Once ready, writes (atomically) to the state file::

    {"aws_endpoint", "lambda_endpoint", "region", "account_id", "state_machine_arn", "topic_arn",
     "functions": {logical_id: arn}, "pid"}

and removes it again on a clean stop. Handler output (Powertools' JSON logs) and one line per invocation go to
stdout/stderr; the ``rotator`` CLI redirects them to a log file. Exit status: 0 on a signal-initiated stop, 2 when
the stack cannot start.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from rotator.local.aws_stack import LocalAwsStack
from rotator.local.lambda_runtime import InvokeResult
from rotator.local.template import LocalFunction

LOG = logging.getLogger("rotator.local.daemon")


def write_state_file(path: Path, state: dict[str, Any]) -> None:
    """Write JSON atomically: readers see either no file or the complete document."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(state, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _log_invocation(function: LocalFunction, _event: Any, result: InvokeResult) -> None:
    # Never the event or the payload: the rotation event carries the RotationToken.
    if result.ok:
        LOG.info("invoke %s %s ok %.0fms", function.logical_id, result.request_id, result.duration_ms)
    else:
        LOG.warning(
            "invoke %s %s %s %.0fms: %s",
            function.logical_id,
            result.request_id,
            result.error_type,
            result.duration_ms,
            result.error_message,
        )


def _parse_overrides(items: list[str]) -> dict[str, str]:
    overrides: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"--parameter-overrides expects Key=Value, got {item!r}")
        overrides[key] = value
    return overrides


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rotator.local.daemon", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-file", required=True, type=Path)
    parser.add_argument("--template", default="template.yaml", type=Path)
    parser.add_argument("--aws-port", type=int, default=0, help="moto server port (0: any free port)")
    parser.add_argument("--lambda-port", type=int, default=0, help="Lambda Invoke API port (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--parameter-overrides", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--fast-retries", action="store_true", help="cap Retry IntervalSeconds sleeps (tests only)")
    parser.add_argument("--log-level", default=os.environ.get("ROTATOR_LOCAL_LOG_LEVEL", "INFO"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("botocore", "boto3", "urllib3", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    stopping = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        LOG.info("received %s, stopping", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    state_file: Path = args.state_file.resolve()
    state_file.unlink(missing_ok=True)  # whoever waits for the file must not read a stale one
    try:
        stack = LocalAwsStack(
            args.template,
            parameter_overrides=_parse_overrides(args.parameter_overrides),
            host=args.host,
            lambda_port=args.lambda_port,
            serve_aws=True,
            aws_port=args.aws_port,
            fast_retries=args.fast_retries,
            preload_handlers=True,
        )
        stack.invoker.listeners.append(_log_invocation)
        stack.start()
    except Exception:
        LOG.exception("the local AWS stack could not start")
        return 2

    try:
        write_state_file(state_file, stack.describe())
        LOG.info("ready: %s", json.dumps(stack.describe()))
        sys.stdout.flush()
        while not stopping.wait(0.5):
            pass
    finally:
        state_file.unlink(missing_ok=True)
        stack.stop()
        LOG.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
