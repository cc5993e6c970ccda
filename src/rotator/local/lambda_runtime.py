"""An in-process Lambda "runtime" and an HTTP server speaking the Lambda Invoke API.

Handlers are imported from their code directory and called in this process, so they see the same moto state as
everything else in the local stack. The HTTP server exists because moto's Step Functions interpreter invokes Lambda
tasks through a real boto3 client: with ``AWS_ENDPOINT_URL_LAMBDA`` pointing here, Task states reach our handlers.

What is emulated (close to the Python Lambda runtime):

- ``POST /2015-03-31/functions/{name | ARN | partial ARN}[:qualifier]/invocations[?Qualifier=…]``,
  ``X-Amz-Invocation-Type`` ``RequestResponse`` / ``Event`` (202, run in the background) / ``DryRun`` (204);
- a handler exception → HTTP 200, ``X-Amz-Function-Error: Unhandled``, body
  ``{"errorMessage", "errorType", "requestId", "stackTrace"}`` (formatted frames, never local variables);
- the function timeout: the caller gets ``Sandbox.Timedout`` after ``Timeout`` seconds (the handler thread cannot be
  killed; it finishes in the background, its result discarded — the one place this differs from a real sandbox);
- a non-JSON-serialisable result → ``Runtime.MarshalError``; an unknown function → 404 ``ResourceNotFoundException``;
- ``GET /2015-03-31/functions/`` (ListFunctions) and ``GET /2015-03-31/functions/{name}`` (GetFunction), minimal.
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
from urllib.parse import parse_qs, unquote, urlsplit

from rotator.local.template import LocalFunction, function_arn

LOG = logging.getLogger(__name__)

_INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations/?$")
_FUNCTION_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/?$")
_LIST_PATH = re.compile(r"^/2015-03-31/functions/?$")


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
    identity: Any = None
    client_context: Any = None
    tenant_id: Any = None
    _deadline: float = 0.0

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_seconds
        day = time.strftime("%Y/%m/%d", time.gmtime())
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = f"{day}/[$LATEST]{uuid.uuid4().hex}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass(frozen=True)
class InvokeResult:
    """Outcome of one invocation. ``payload`` is the decoded JSON result; on error it is the error document."""

    function_name: str
    request_id: str
    payload: Any = None
    error_type: str | None = None
    error_message: str | None = None
    stack_trace: tuple[str, ...] = ()
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error_type is None

    @property
    def function_error(self) -> str | None:
        """The value of the ``X-Amz-Function-Error`` header (Lambda reports every Python exception as Unhandled)."""
        return None if self.ok else "Unhandled"

    def response_body(self) -> bytes:
        if self.ok:
            return json.dumps(self.payload).encode("utf-8")
        return json.dumps(
            {
                "errorMessage": self.error_message,
                "errorType": self.error_type,
                "requestId": self.request_id,
                "stackTrace": list(self.stack_trace),
            }
        ).encode("utf-8")


class LambdaInvoker:
    """Resolves function names/ARNs to local functions and runs their handlers in this process."""

    def __init__(
        self,
        functions: Iterable[LocalFunction],
        *,
        region: str,
        account_id: str,
        enforce_timeouts: bool = True,
    ) -> None:
        self.region = region
        self.account_id = account_id
        self.enforce_timeouts = enforce_timeouts
        self.functions: dict[str, LocalFunction] = {f.logical_id: f for f in functions}
        self._handlers: dict[str, Callable[[Any, Any], Any]] = {}
        self._lock = threading.Lock()
        # Observers (tests, the daemon's log) get (function, event, result) after each invocation.
        self.listeners: list[Callable[[LocalFunction, Any, InvokeResult], None]] = []
        # Set while this invoker belongs to a stack started inside another one (tests): unknown names go there.
        self.fallback: LambdaInvoker | None = None

    # -- names --------------------------------------------------------------------------------------------------------

    def function_arn(self, logical_id: str) -> str:
        return function_arn(self.region, self.account_id, logical_id)

    def lookup(self, name_or_arn: str) -> LocalFunction:
        """Accepts ``Name``, ``Name:qualifier``, ``123456789012:function:Name[:q]`` and full ARNs (any qualifier).
        Falls back to ``fallback`` (the enclosing stack's invoker) for functions this one does not have."""
        try:
            return self._lookup_own(name_or_arn)
        except FunctionNotFound:
            if self.fallback is not None:
                return self.fallback.lookup(name_or_arn)
            raise

    def _lookup_own(self, name_or_arn: str) -> LocalFunction:
        name = name_or_arn
        if name.startswith("arn:"):
            parts = name.split(":")
            if len(parts) < 7 or parts[2] != "lambda" or parts[5] != "function":
                raise FunctionNotFound(f"Function not found: {name_or_arn}")
            if parts[3] != self.region or parts[4] != self.account_id:
                raise FunctionNotFound(f"Function not found: {name_or_arn}")
            name = parts[6]
        elif ":function:" in name:
            account, _, rest = name.partition(":function:")
            if account != self.account_id:
                raise FunctionNotFound(f"Function not found: {name_or_arn}")
            name = rest.split(":", 1)[0]
        else:
            name = name.split(":", 1)[0]
        try:
            return self.functions[name]
        except KeyError:
            raise FunctionNotFound(f"Function not found: {self.function_arn(name)}") from None

    def handler(self, function: LocalFunction) -> Callable[[Any, Any], Any]:
        cached = self._handlers.get(function.logical_id)
        if cached is not None:
            return cached
        with self._lock:
            cached = self._handlers.get(function.logical_id)
            if cached is None:
                code_dir = str(function.code_dir)
                if code_dir not in sys.path:
                    sys.path.insert(0, code_dir)
                module = importlib.import_module(function.module_name)
                cached = getattr(module, function.function_attr)
                if not callable(cached):
                    raise TypeError(f"{function.handler} is not callable")
                self._handlers[function.logical_id] = cached
            return cached

    # -- invocation ---------------------------------------------------------------------------------------------------

    def invoke(self, function_name_or_arn: str, payload: Any) -> InvokeResult:
        """Run the function's handler with ``payload`` (already decoded JSON). Raises FunctionNotFound."""
        try:
            function = self._lookup_own(function_name_or_arn)
        except FunctionNotFound:
            if self.fallback is not None:
                return self.fallback.invoke(function_name_or_arn, payload)
            raise
        invoked_arn = (
            function_name_or_arn if function_name_or_arn.startswith("arn:") else self.function_arn(function.logical_id)
        )
        context = FakeLambdaContext(
            function_name=function.logical_id,
            invoked_function_arn=invoked_arn,
            memory_limit_in_mb=function.memory_size,
            timeout_seconds=function.timeout,
        )
        started = time.monotonic()
        outcome: dict[str, InvokeResult] = {}

        def run() -> None:
            outcome["result"] = self._run_handler(function, payload, context, started)

        if self.enforce_timeouts:
            worker = threading.Thread(
                target=run, name=f"lambda-{function.logical_id}-{context.aws_request_id[:8]}", daemon=True
            )
            worker.start()
            worker.join(function.timeout)
            if worker.is_alive():
                elapsed = time.monotonic() - started
                LOG.error(
                    "%s %s Task timed out after %.2f seconds", function.logical_id, context.aws_request_id, elapsed
                )
                result = InvokeResult(
                    function_name=function.logical_id,
                    request_id=context.aws_request_id,
                    error_type="Sandbox.Timedout",
                    error_message=(
                        f"RequestId: {context.aws_request_id} Error: Task timed out after {elapsed:.2f} seconds"
                    ),
                    duration_ms=elapsed * 1000,
                )
            else:
                result = outcome["result"]
        else:
            run()
            result = outcome["result"]

        for listener in list(self.listeners):
            try:
                listener(function, payload, result)
            except Exception:
                LOG.exception("invoke listener failed")
        return result

    def _run_handler(
        self, function: LocalFunction, payload: Any, context: FakeLambdaContext, started: float
    ) -> InvokeResult:
        request_id = context.aws_request_id
        try:
            handler = self.handler(function)
            value = handler(payload, context)
        except Exception as exc:
            # Like the Python runtime: formatted frames only (file, line, function, source line), no locals.
            tb = exc.__traceback__
            tb = tb.tb_next if tb is not None and tb.tb_next is not None else tb  # drop this runtime's own frame
            frames = tuple(traceback.format_tb(tb))
            LOG.error(
                "[ERROR] %s %s %s: %s\n%s",
                function.logical_id,
                request_id,
                type(exc).__name__,
                exc,
                "".join(frames).rstrip(),
            )
            return InvokeResult(
                function_name=function.logical_id,
                request_id=request_id,
                error_type=type(exc).__name__,
                error_message=str(exc),
                stack_trace=frames,
                duration_ms=(time.monotonic() - started) * 1000,
            )
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            return InvokeResult(
                function_name=function.logical_id,
                request_id=request_id,
                error_type="Runtime.MarshalError",
                error_message=f"Unable to marshal response: {exc}",
                duration_ms=(time.monotonic() - started) * 1000,
            )
        return InvokeResult(
            function_name=function.logical_id,
            request_id=request_id,
            payload=value,
            duration_ms=(time.monotonic() - started) * 1000,
        )

    def function_configuration(self, function: LocalFunction) -> dict[str, Any]:
        return {
            "FunctionName": function.logical_id,
            "FunctionArn": self.function_arn(function.logical_id),
            "Runtime": "python3.11",
            "Handler": function.handler,
            "Timeout": function.timeout,
            "MemorySize": function.memory_size,
            "Version": "$LATEST",
            "State": "Active",
            "Environment": {"Variables": dict(function.environment)},
        }


class _Handler(BaseHTTPRequestHandler):
    server: LambdaInvokeServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        LOG.debug("lambda-api %s", format % args)

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _error(self, status: int, error_type: str, message: str) -> None:
        body = json.dumps({"Type": "User", "Message": message, "message": message}).encode()
        self._send(status, body, {"x-amzn-ErrorType": error_type})

    def _function_ref(self, raw: str, query: dict[str, list[str]]) -> str:
        name = unquote(raw)
        qualifier = (query.get("Qualifier") or [""])[0]
        if qualifier and qualifier != "$LATEST":
            LOG.debug("qualifier %s ignored: the local stack has only $LATEST", qualifier)
        return name

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw_body = self.rfile.read(length) if length else b""
        match = _INVOKE_PATH.match(url.path)
        if not match:
            self._error(404, "UnknownOperationException", f"Unknown operation POST {url.path}")
            return
        invoker = self.server.invoker
        name = self._function_ref(match.group("name"), parse_qs(url.query))
        try:
            invoker.lookup(name)
        except FunctionNotFound as exc:
            self._error(404, "ResourceNotFoundException", str(exc))
            return
        try:
            payload = json.loads(raw_body) if raw_body.strip() else {}
        except ValueError as exc:
            self._error(400, "InvalidRequestContentException", f"Could not parse request body into json: {exc}")
            return
        invocation_type = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        if invocation_type == "DryRun":
            self._send(204)
            return
        if invocation_type == "Event":
            threading.Thread(target=invoker.invoke, args=(name, payload), daemon=True).start()
            self._send(202)
            return
        result = invoker.invoke(name, payload)
        headers = {"X-Amz-Executed-Version": "$LATEST", "x-amzn-RequestId": result.request_id}
        if result.function_error:
            headers["X-Amz-Function-Error"] = result.function_error
        self._send(200, result.response_body(), headers)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        invoker = self.server.invoker
        if _LIST_PATH.match(url.path):
            configs = [invoker.function_configuration(f) for f in invoker.functions.values()]
            self._send(200, json.dumps({"Functions": configs}).encode())
            return
        match = _FUNCTION_PATH.match(url.path)
        if not match:
            self._error(404, "UnknownOperationException", f"Unknown operation GET {url.path}")
            return
        try:
            function = invoker.lookup(self._function_ref(match.group("name"), parse_qs(url.query)))
        except FunctionNotFound as exc:
            self._error(404, "ResourceNotFoundException", str(exc))
            return
        body = {"Configuration": invoker.function_configuration(function), "Code": {"RepositoryType": "Local"}}
        self._send(200, json.dumps(body).encode())


class LambdaInvokeServer(ThreadingHTTPServer):
    """Threaded: Map iterations run in parallel threads inside moto and invoke concurrently."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, invoker: LambdaInvoker, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__((host, port), _Handler)
        self.invoker = invoker
        self._thread: threading.Thread | None = None

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client closing a keep-alive connection is normal (boto3 clients being garbage-collected).
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        LOG.exception("Lambda API: error while serving %s", client_address)

    @property
    def endpoint(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, name="lambda-invoke-api", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


__all__ = [
    "FakeLambdaContext",
    "FunctionNotFound",
    "InvokeResult",
    "LambdaInvokeServer",
    "LambdaInvoker",
]
