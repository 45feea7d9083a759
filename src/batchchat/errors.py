"""The whole batchchat exception tree.

::

    BatchchatError
    ├── SpecError                 the job spec is invalid (file, line, field in the message)
    ├── InputError                the input data is unusable (file, line, column, row id)
    │   └── TemplateError         a template cannot be rendered for a row
    ├── RequestError              one attempt of one request failed
    │   ├── TransportError        nothing usable came back
    │   │   ├── RequestTimeout    ConnectTimeout, FirstByteTimeout, IdleTimeout, DeadlineExceeded
    │   │   └── NetworkError      connection reset, dropped mid-body
    │   │       └── ConnectError  refused, no such host, unreachable
    │   ├── APIStatusError        the server answered with an error status (status, body, code)
    │   │   ├── RateLimitError    429 (retry_after from the headers)
    │   │   │   ├── QuotaExceededError    insufficient_quota: never retried, stops the run
    │   │   │   └── RequestTooLargeError  one request above the TPM limit: never retried
    │   │   ├── ServerError       5xx and 529
    │   │   ├── ConflictError     408 / 409
    │   │   └── ClientError       other 4xx: 400, 401, 403, 404, 413, 422 (never retried)
    │   │       ├── AuthenticationError   401 / 403
    │   │       └── ContextLengthError    the prompt does not fit the model
    │   ├── ResponseFormatError   a 200 whose body is truncated, unparsable or incomplete,
    │   │   │                     or an error event inside a 200 stream
    │   │   ├── StreamError       an error event inside a 200 stream
    │   │   └── EmptyResponseError  no choice, or a choice without a message
    │   └── BatchLineError        a Batch API line that came back without an answer: it
    │       │                     expired, was cancelled, or is missing from the output
    │       └── BatchLineInvalid  the Batch API refused the line when it validated the file
    ├── RetriesExhausted          a request failed for good (holds the last error)
    ├── ResumeError               the output directory holds a run of a different spec
    ├── LockedError               another process is writing the output directory
    ├── BatchAPIError             a Batch API call failed in a way that stops a batch run
    │   └── BatchUnsupportedError the endpoint runs no Batch API jobs (no /v1/files, /v1/batches)
    ├── CacheError                the response cache cannot be opened, read or written
    ├── SinkError                 results could not be written
    │   └── DiskFullError         the disk is full: the run stops sending at once
    └── ClusterError              Ray failed a run on it (a worker or node lost)

Whether a request error is worth retrying is decided here, by type, in
:func:`is_retryable` (and, in a pool of endpoints, whether another endpoint may take it,
in :func:`may_fail_over`) -- nowhere else, and never by matching message strings.
"""

from __future__ import annotations

from collections.abc import Mapping

from batchchat.models import ExitCode


class BatchchatError(Exception):
    """Base of every error batchchat raises on purpose."""

    #: the process exit code the CLI uses when this error ends a command
    exit_code: ExitCode = ExitCode.INVALID


class SpecError(BatchchatError):
    """The job spec is invalid; ``problems`` lists every finding, not only the first."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = problems or []
        text = message if not self.problems else message + "\n" + "\n".join(self.problems)
        super().__init__(text)


class InputError(BatchchatError):
    """The input data cannot be read or does not fit the spec."""


class TemplateError(InputError):
    """A template cannot be rendered (unknown column, bad filter, wrong type)."""


class RequestError(BatchchatError):
    """One attempt of one request failed."""

    exit_code = ExitCode.FAILED
    #: HTTP status of the failed attempt, when the server answered at all
    http_status: int | None = None


class TransportError(RequestError):
    """Nothing usable came back from the network."""


class RequestTimeout(TransportError):
    """An attempt ran past one of its deadlines."""


class ConnectTimeout(RequestTimeout):
    """The TCP/TLS connection was not established in time."""


class FirstByteTimeout(RequestTimeout):
    """The server accepted the request but sent no response headers in time."""


class IdleTimeout(RequestTimeout):
    """The response stalled: no byte (not even a keep-alive) for too long."""


class DeadlineExceeded(RequestTimeout):
    """The attempt as a whole ran past its total deadline."""


class NetworkError(TransportError):
    """The connection failed: refused, reset, or dropped before the body ended."""


class ConnectError(NetworkError):
    """No connection could be made: refused, no such host, unreachable."""


class APIStatusError(RequestError):
    """The server answered with an error status."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str | None = None,
        error_type: str | None = None,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = status
        self.code = code
        self.error_type = error_type
        self.body = body
        self.headers = dict(headers or {})
        #: the server's advice in seconds before trying again (any status may carry it)
        self.retry_after = retry_after

    def __str__(self) -> str:
        text = super().__str__()
        if self.retry_after is None:
            return text
        return f"{text} (the server asks to retry after {self.retry_after:g} s)"


class RateLimitError(APIStatusError):
    """429: slow down. ``retry_after`` is the server's advice in seconds, if it gave one."""


class QuotaExceededError(RateLimitError):
    """429 that waiting will not fix: no quota left, or a request larger than the limit."""


class RequestTooLargeError(RateLimitError):
    """429 for one request that asks for more tokens than the whole per-minute limit.

    Waiting cannot help this row (never retried), but the others can pass, so unlike an
    exhausted quota it does not stop the run.
    """


class ServerError(APIStatusError):
    """5xx (and 529, "overloaded"): the server's fault, usually passing."""


class ConflictError(APIStatusError):
    """408 request timeout / 409 conflict: the server asks for a retry."""


class ClientError(APIStatusError):
    """4xx other than 408/409/429: the request itself is wrong; retrying cannot help."""


class AuthenticationError(ClientError):
    """401/403: the key is missing, wrong, or not allowed to use this model."""


class ContextLengthError(ClientError):
    """The prompt (plus max tokens) does not fit the model's context window."""


class ResponseFormatError(RequestError):
    """A 200 whose body is truncated, unparsable, or an incomplete stream."""


class StreamError(ResponseFormatError):
    """The server sent an error event inside a 200 stream."""


class EmptyResponseError(ResponseFormatError):
    """A 200 without a usable answer: no choice at all, or a choice without a message."""


class RetriesExhausted(BatchchatError):
    """A request failed for good; ``last_error`` says why, ``attempts`` how often it was tried."""

    exit_code = ExitCode.FAILED

    def __init__(self, last_error: RequestError, attempts: int) -> None:
        super().__init__(f"gave up after {attempts} attempt(s): {last_error}")
        self.last_error = last_error
        self.attempts = attempts


class ResumeError(BatchchatError):
    """The output directory holds results of a spec whose requests differ from this one."""


class LockedError(BatchchatError):
    """Another live process holds the output directory's lock."""


class BatchLineError(RequestError):
    """A line of a Batch API batch came back without an answer: ``code`` says why
    (``batch_expired``, ``batch_cancelled``, ``batch_failed``, ``missing``, ...)."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


class BatchLineInvalid(BatchLineError):
    """The Batch API refused a line (or its whole file) when it validated the batch."""


class BatchAPIError(BatchchatError):
    """A Batch API call (upload, create, poll, download, cancel) failed in a way that stops
    the batch run; the batches already created stay known, and a re-run picks them up."""

    exit_code = ExitCode.FAILED


class BatchUnsupportedError(BatchAPIError):
    """The endpoint has no Batch API (``/v1/files``, ``/v1/batches``): nothing was sent."""

    exit_code = ExitCode.INVALID


class CacheError(BatchchatError):
    """The response cache cannot be used (a damaged or foreign file, a disk that is full).

    A run that meets one goes on without the cache; ``batchchat cache`` reports it.
    """


class SinkError(BatchchatError):
    """Results could not be written to the output directory."""

    exit_code = ExitCode.FAILED


class DiskFullError(SinkError):
    """The output directory's disk is full: nothing more is sent until there is room."""


class ClusterError(BatchchatError):
    """Ray could not carry a run to its end (a worker or a node was lost); what was written
    is kept, and a re-run sends the rest."""

    exit_code = ExitCode.FAILED


#: Error types worth another attempt. Everything else that is a RequestError is final.
_RETRYABLE: tuple[type[RequestError], ...] = (
    TransportError,
    RateLimitError,
    ServerError,
    ConflictError,
    ResponseFormatError,
    BatchLineError,
)
_NEVER_RETRYABLE: tuple[type[RequestError], ...] = (
    QuotaExceededError,
    RequestTooLargeError,
    ClientError,
    BatchLineInvalid,
)


#: Errors every other request of the run would repeat: the run stops at the first one.
_FATAL: tuple[type[RequestError], ...] = (AuthenticationError, QuotaExceededError)


def is_fatal(error: BaseException) -> bool:
    """True when sending more requests would only repeat this failure (a rejected key, no
    quota): a wrong key must not turn a million rows into a million error rows."""
    return isinstance(error, _FATAL)


#: Errors that belong to the row whatever the endpoint: a pool never sends the row elsewhere.
_ROW_FAULTS: tuple[type[RequestError], ...] = (ContextLengthError, RequestTooLargeError)


def may_fail_over(error: BaseException, *, endpoint_proven: bool = True) -> bool:
    """In a pool of endpoints: whether another endpoint may take the request after ``error``.

    Decided by type: what is worth retrying, and what is the endpoint's fault (:func:`is_fatal`:
    a rejected key, no quota). A client error (400, 404...) is the row's own -- never sent
    around the pool -- unless it came from an endpoint that has not answered once yet
    (``endpoint_proven`` False): a gateway refusing a wrong key with a 400, or a model name
    the endpoint does not know, looks like that. Too long a prompt never fails over.
    """
    if is_retryable(error) or is_fatal(error):
        return True
    if isinstance(error, _ROW_FAULTS):
        return False
    return not endpoint_proven and isinstance(error, ClientError)


def is_retryable(error: BaseException) -> bool:
    """True when another attempt of the same request may succeed; decided by type alone."""
    if isinstance(error, _NEVER_RETRYABLE):
        return False
    return isinstance(error, _RETRYABLE)


def error_type_name(error: BaseException) -> str:
    """The stable name stored in the ``error_type`` column (the class name)."""
    if isinstance(error, RetriesExhausted):
        return type(error.last_error).__name__
    return type(error).__name__
