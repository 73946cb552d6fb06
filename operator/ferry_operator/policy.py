"""One error policy for every controller: transient, permanent, or untrusted.

Every failure the operator meets is one of three kinds, decided here and
nowhere else:

* **transient**: the helper or the API server was not heard (a connection
  refused or cut, a 5xx, a 429, a timeout). Every helper step is idempotent
  and every status write a merge patch, so asking again is safe. Retried with
  backoff (1 s doubling to :data:`RETRY_MAX_SECONDS`); a migration before its
  freeze retries until its deadline, a checkpoint or restore handler through
  kopf's ``TemporaryError``. While a container is frozen nothing is retried:
  the migration rolls back at once, so the downtime does not grow with an
  outage, and the rollback itself is retried for as long as it takes.
* **permanent**: the helper answered with an error, or the request was
  refused (validation, a 4xx). Retrying cannot help; the resource ends
  ``Failed`` with the reason.
* **untrusted**: the helper refused the operator's key, or showed a host key
  other than the one its NodeHelper publishes. Permanent, with its own reason
  (``HelperAuthenticationFailed``, ``HelperHostKeyMismatch``): a retry would
  only hide a misconfigured Secret or an impostor.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import kopf
from ferry_wire import RemoteError

#: The longest wait between two attempts at a transient failure.
RETRY_MAX_SECONDS = 30.0
#: How long kopf waits before running a checkpoint or restore handler again.
HANDLER_RETRY_SECONDS = 10.0
#: How long a ContainerCheckpoint's handler retries a helper it does not hear before
#: the checkpoint ends Failed (a ContainerRestore has its own spec.timeoutSeconds).
CHECKPOINT_RETRY_SECONDS = 300.0
#: HTTP statuses of the API server that say "not now" rather than "no".
TRANSIENT_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})


class Kind(enum.Enum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    UNTRUSTED = "untrusted"


@dataclass(frozen=True, kw_only=True)
class Failure(Exception):
    """A failure the operator decided (or observed) with a reason for the condition."""

    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


class Refusal(Failure):
    """A request refused before anything on a node changed (validation)."""


class ApiError(Exception):
    """A Kubernetes API request that failed; ``status`` None: no HTTP answer at all."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def kind_of(error: BaseException) -> Kind:
    """Which of the three kinds ``error`` is."""
    if isinstance(error, RemoteError):
        if error.untrusted:
            return Kind.UNTRUSTED
        return Kind.TRANSIENT if error.transient else Kind.PERMANENT
    if isinstance(error, ApiError):
        return (
            Kind.TRANSIENT
            if error.status is None or error.status in TRANSIENT_HTTP
            else (Kind.PERMANENT)
        )
    if isinstance(error, Failure):
        return Kind.PERMANENT
    if isinstance(error, (OSError, TimeoutError)):
        return Kind.TRANSIENT
    return Kind.PERMANENT


def as_failure(error: BaseException) -> Failure:
    """``error`` as a Failure with a reason a condition can carry."""
    if isinstance(error, Failure):
        return error
    if isinstance(error, RemoteError):
        return Failure(reason=error.reason.value, message=error.message)
    if isinstance(error, ApiError):
        code = f"HTTP {error.status}" if error.status is not None else "no answer"
        return Failure(
            reason="KubernetesApiError", message=f"the API server refused ({code}): {error}"
        )
    if isinstance(error, TimeoutError):
        return Failure(reason="Timeout", message=str(error) or "timed out")
    return Failure(reason="OperatorError", message=f"{type(error).__name__}: {error}")


def backoff(attempt: int) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (attempt 1 failed: 1 s, then doubling)."""
    return float(min(RETRY_MAX_SECONDS, 2 ** max(0, attempt - 1)))


def for_handler(error: BaseException, *, retry_left: float = float("inf")) -> Failure:
    """In a kopf handler: a transient error becomes kopf's TemporaryError (kopf retries the
    handler, whose steps the helpers' journals make idempotent) while ``retry_left``
    seconds remain; the rest, and a transient error past that, a Failure to record."""
    failure = as_failure(error)
    if kind_of(error) is not Kind.TRANSIENT:
        return failure
    if retry_left > HANDLER_RETRY_SECONDS:
        raise kopf.TemporaryError(str(failure), delay=HANDLER_RETRY_SECONDS) from error
    return Failure(
        reason=failure.reason,
        message=f"{failure.message} (retried until its deadline; giving up)",
    )
