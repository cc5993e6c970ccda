"""An in-process Lambda "runtime" and an HTTP server speaking the one Lambda API call the local stack receives.

Handlers are imported from their code directory and called in this process, so they see the same moto state as
everything else. The HTTP server exists because moto's Step Functions interpreter invokes Lambda tasks through a real
boto3 client: with ``AWS_ENDPOINT_URL_LAMBDA`` pointing here, Task states reach our handlers. (Secrets Manager's
RotateSecret calls ``LambdaInvoker.invoke`` directly, see ``moto_patches``.)

What is emulated, close to the Python Lambda runtime:

- ``POST /2015-03-31/functions/{name or URL-encoded ARN}/invocations``, synchronous (``RequestResponse``);
- a handler exception → HTTP 200, ``X-Amz-Function-Error: Unhandled``, body
  ``{"errorMessage", "errorType", "requestId", "stackTrace"}`` (formatted frames, never local variables);
- the function timeout: the caller gets ``Sandbox.Timedout`` after ``Timeout`` seconds (the handler thread cannot be
  killed; it finishes in the background and its result is discarded);
- a non-JSON-serialisable result → ``Runtime.MarshalError``; an unknown function → 404 ``ResourceNotFoundException``.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from rotator.local.template import LocalFunction, function_arn

LOG = logging.getLogger("local_stack.lambda_runtime")

_INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations/?$")


class FunctionNotFound(LookupError):
    pass


@dataclass
class FakeLambdaContext:
    """The attributes and method of the Python runtime's context object that handlers and Powertools use."""

    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    timeout_seconds: float
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    _deadline: float = 0.0

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_seconds
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = f"{time.strftime('%Y/%m/%d', time.gmtime())}/[$LATEST]{uuid.uuid4().hex}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass(frozen=True)
class InvokeResult:
    """Outcome of one invocation. ``payload`` is the decoded JSON result; on error it is None."""

    function_name: str
    request_id: str
    duration_ms: float
    payload: Any = None
    error_type: str | None = None
    error_message: str | None = None
    stack_trace: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error_type is None

    def response_body(self) -> bytes:
        if self.ok:
            return json.dumps(self.payload).encode("utf-8")
        error = {
            "errorMessage": self.error_message,
            "errorType": self.error_type,
            "requestId": self.request_id,
            "stackTrace": list(self.stack_trace),
        }
        return json.dumps(error).encode("utf-8")


class LambdaInvoker:
    """Resolves function names and ARNs to local functions and runs their handlers in this process."""

    def __init__(self, functions: Iterable[LocalFunction]) -> None:
        self.functions: dict[str, LocalFunction] = {f.logical_id: f for f in functions}
        self._handlers: dict[str, Callable[[Any, Any], Any]] = {}
        self._lock = threading.Lock()
        # Observers (the daemon's log) get (function, result) after each invocation.
        self.listeners: list[Callable[[LocalFunction, InvokeResult], None]] = []

    def lookup(self, name_or_arn: str) -> LocalFunction:
        """``Name`` or its ARN (``arn:aws:lambda:…:function:Name``, a qualifier is ignored)."""
        name = name_or_arn.rsplit(":function:", 1)[-1].split(":", 1)[0]
        try:
            return self.functions[name]
        except KeyError:
            raise FunctionNotFound(f"Function not found: {function_arn(name)}") from None

    def handler(self, function: LocalFunction) -> Callable[[Any, Any], Any]:
        with self._lock:
            if function.logical_id not in self._handlers:
                module = importlib.import_module(function.module_name)
                self._handlers[function.logical_id] = getattr(module, function.function_attr)
            return self._handlers[function.logical_id]

    def invoke(self, name_or_arn: str, payload: Any) -> InvokeResult:
        """Run the function's handler with ``payload`` (decoded JSON) within its timeout. Raises FunctionNotFound."""
        function = self.lookup(name_or_arn)
        context = FakeLambdaContext(
            function_name=function.logical_id,
            invoked_function_arn=function_arn(function.logical_id),
            memory_limit_in_mb=function.memory_size,
            timeout_seconds=function.timeout,
        )
        outcome: list[InvokeResult] = []
        worker = threading.Thread(
            target=lambda: outcome.append(self._run_handler(function, payload, context)),
            name=f"lambda-{function.logical_id}-{context.aws_request_id[:8]}",
            daemon=True,
        )
        worker.start()
        worker.join(function.timeout)
        result = outcome[0] if outcome else _timed_out(function, context)
        for listener in self.listeners:
            listener(function, result)
        return result

    def _run_handler(self, function: LocalFunction, payload: Any, context: FakeLambdaContext) -> InvokeResult:
        started = time.monotonic()

        def result(**fields: Any) -> InvokeResult:
            duration_ms = (time.monotonic() - started) * 1000
            return InvokeResult(function.logical_id, context.aws_request_id, duration_ms, **fields)

        try:
            value = self.handler(function)(payload, context)
        except Exception as exc:
            # Like the Python runtime: formatted frames only (file, line, function, source line), no locals.
            tb = exc.__traceback__
            frames = tuple(traceback.format_tb(tb.tb_next if tb is not None and tb.tb_next else tb))
            LOG.error("[ERROR] %s %s %s: %s", function.logical_id, context.aws_request_id, type(exc).__name__, exc)
            # A fault may stand for the runtime's own errors (e.g. Runtime.ExitError: the process died mid-task).
            error_type = getattr(exc, "lambda_error_type", type(exc).__name__)
            return result(error_type=error_type, error_message=str(exc), stack_trace=frames)
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            return result(error_type="Runtime.MarshalError", error_message=f"Unable to marshal response: {exc}")
        return result(payload=value)


def _timed_out(function: LocalFunction, context: FakeLambdaContext) -> InvokeResult:
    LOG.error("%s %s Task timed out after %.2f seconds", function.logical_id, context.aws_request_id, function.timeout)
    return InvokeResult(
        function.logical_id,
        context.aws_request_id,
        function.timeout * 1000,
        error_type="Sandbox.Timedout",
        error_message=f"RequestId: {context.aws_request_id} Error: Task timed out after {function.timeout:.2f} seconds",
    )


class _Handler(BaseHTTPRequestHandler):
    server: LambdaInvokeServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        LOG.debug("lambda-api %s", format % args)

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", "Content-Length": str(len(body)), **headers}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, error_type: str, message: str) -> None:
        self._send(status, json.dumps({"Type": "User", "Message": message}).encode(), {"x-amzn-ErrorType": error_type})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        match = _INVOKE_PATH.match(urlsplit(self.path).path)
        if not match:
            self._error(404, "UnknownOperationException", f"Unknown operation POST {self.path}")
            return
        try:
            payload = json.loads(body) if body.strip() else {}
        except ValueError as exc:
            self._error(400, "InvalidRequestContentException", f"Could not parse request body into json: {exc}")
            return
        try:
            result = self.server.invoker.invoke(unquote(match.group("name")), payload)
        except FunctionNotFound as exc:
            self._error(404, "ResourceNotFoundException", str(exc))
            return
        headers = {"X-Amz-Executed-Version": "$LATEST", "x-amzn-RequestId": result.request_id}
        if not result.ok:
            headers["X-Amz-Function-Error"] = "Unhandled"  # how Lambda reports any Python exception
        self._send(200, result.response_body(), headers)


class LambdaInvokeServer(ThreadingHTTPServer):
    """Threaded: Map iterations run in parallel threads inside moto and invoke concurrently."""

    daemon_threads = True

    def __init__(self, invoker: LambdaInvoker) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.invoker = invoker
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, name="lambda-invoke-api", daemon=True
        )

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client closing a keep-alive connection is normal (boto3 clients being garbage-collected).
        if not isinstance(sys.exc_info()[1], ConnectionResetError | BrokenPipeError):
            LOG.exception("Lambda API: error while serving %s", client_address)

    @property
    def endpoint(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)
