"""AWS failures the state machine retries: throttling, 5xx and connection errors that outlived the SDK's own retries
(``AWS_RETRY_MODE=standard``) become ``ServiceUnavailable``; everything else is raised as the SDK raised it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

from rotator_core.errors import ServiceUnavailable

RETRIABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "InternalServiceError",
        "InternalFailure",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
    }
)


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextmanager
def aws_call(what: str) -> Iterator[None]:
    try:
        yield
    except ClientError as exc:
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if error_code(exc) in RETRIABLE_CODES or status >= 500:
            raise ServiceUnavailable(f"{what}: {error_code(exc) or status} (retried by the SDK)") from None
        raise
    except (ConnectionError, HTTPClientError) as exc:
        raise ServiceUnavailable(f"{what}: {type(exc).__name__}") from None
