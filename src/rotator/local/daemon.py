"""Run the local AWS stack in the foreground until SIGTERM/SIGINT (``rotator local up`` starts it in the background).

    python -m rotator.local.daemon --state-file PATH --template template.yaml

Once ready, writes (atomically) to the state file::

    {"aws_endpoint", "lambda_endpoint", "region", "account_id", "state_machine_arn", "topic_arn",
     "functions": {logical_id: arn}, "pid"}

and removes it again on a clean stop. Handler output (Powertools' JSON logs) and one line per invocation go to
stdout/stderr, which ``rotator local up`` sends to a log file. Exit status: 0 on a signal-initiated stop, 2 when the
stack cannot start.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from rotator.local.aws_stack import LocalAwsStack
from rotator.local.lambda_runtime import InvokeResult
from rotator.local.rig.process import write_json
from rotator.local.template import LocalFunction

LOG = logging.getLogger("local_stack.daemon")


def _log_invocation(function: LocalFunction, result: InvokeResult) -> None:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rotator.local.daemon", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-file", required=True, type=Path)
    parser.add_argument("--template", required=True, type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
        stack = LocalAwsStack(args.template, serve_aws=True, preload_handlers=True)
        stack.invoker.listeners.append(_log_invocation)
        stack.start()
    except Exception:
        LOG.exception("the local AWS stack could not start")
        return 2
    try:
        write_json(state_file, stack.describe())
        LOG.info("ready: %s", json.dumps(stack.describe()))
        while not stopping.wait(0.5):
            pass
    finally:
        state_file.unlink(missing_ok=True)
        stack.stop()
        LOG.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
