"""Why a request to the tracking server failed, in one line: a missing or wrong login, a missing
permission, or a server that did not answer through MLflow's own retries.

MLflow reports these as an :class:`~mlflow.exceptions.MlflowException` (REST calls: error code
``UNAUTHENTICATED`` for HTTP 401, ``PERMISSION_DENIED`` for 403; a connection failure as the
context of the exception), or as a :class:`requests.HTTPError` (artifact uploads through the
server's proxy). :func:`tracking_access_error` turns each into a :class:`TrackingAccessError`
whose message names the server, the cause and the fix; the commands treat it as a usage error
(one line, exit status 2: runners/cli.py). Anything else is left alone.

The credentials are MLflow's own: ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``
(HTTP basic authentication, what ``mlflow server --app-name basic-auth`` checks), or
``MLFLOW_TRACKING_TOKEN`` (a bearer token, for a server behind a proxy that checks tokens), or
the ``[mlflow]`` section of ``~/.mlflow/credentials``; this project reads none of them itself.

How long MLflow retries (:func:`retry_seconds`): ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` (default
7) retries, the k-th after ``BACKOFF_FACTOR * 2**(k-1)`` seconds (default factor 2; the first
retry at once, each wait capped at urllib3's 120 s, plus up to ``BACKOFF_JITTER`` s): with the
defaults 0 + 4 + 8 + 16 + 32 + 64 + 120 = 244 s, about 4 minutes, for a refused connection
(docs/references.md §9.2).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["TrackingAccessError", "TrackingAuthError", "TrackingPermissionError",
           "TrackingUnavailableError", "explained_requests", "retry_seconds",
           "tracking_access_error"]

_MAX_WAIT_S = 120.0  # urllib3's Retry.DEFAULT_BACKOFF_MAX


class TrackingAccessError(ValueError):
    """The tracking server refused a request or did not answer (a usage error: fix and rerun)."""


class TrackingAuthError(TrackingAccessError):
    """HTTP 401: no login, or a wrong user name or password."""


class TrackingPermissionError(TrackingAccessError):
    """HTTP 403: the user lacks the permission the request needs."""


class TrackingUnavailableError(TrackingAccessError):
    """The server did not answer, or kept failing, through MLflow's retries."""


def retry_seconds(environ: dict[str, str] | None = None) -> float:
    """How long MLflow keeps retrying a request that cannot connect (jitter left out)."""
    env = os.environ if environ is None else environ
    retries = int(env.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7"))
    factor = float(env.get("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "2"))
    return sum(min(_MAX_WAIT_S, factor * 2 ** (k - 1)) if k > 1 else 0.0
               for k in range(1, retries + 1))


def tracking_access_error(error: BaseException, uri: str | None = None, doing: str = ""
                          ) -> TrackingAccessError | None:
    """``error`` as a one-line :class:`TrackingAccessError`, or None when it is something else.

    Args:
        error: what MLflow (or requests) raised.
        uri: the tracking URI (default: MLflow's current one).
        doing: what was asked, for the message (``writing run 1a2b…``); optional.
    """
    if isinstance(error, TrackingAccessError):
        return error
    status = _http_status(error)
    server = _server(uri) if status in (401, 403) or _connection_failure(error) else ""
    while_doing = f" while {doing}" if doing else ""
    if status == 401:
        user = _user()
        if user:
            return TrackingAuthError(
                f"the tracking server {server} refused the login of user {user!r}{while_doing} "
                "(HTTP 401: wrong password or unknown user); check MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD (or ~/.mlflow/credentials)")
        return TrackingAuthError(
            f"the tracking server {server} asks for a login (HTTP 401){while_doing} and none "
            "was given; set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or "
            "MLFLOW_TRACKING_TOKEN, or the [mlflow] section of ~/.mlflow/credentials)")
    if status == 403:
        return TrackingPermissionError(
            f"the tracking server {server} denied user {_user() or '(token)'!r} permission"
            f"{while_doing or _endpoint(error)} (HTTP 403); ask the experiment's owner or an "
            "admin to grant EDIT on it (MLflow basic-auth permissions), or write to an "
            "experiment of your own (experiment=<name>)")
    cause = _connection_failure(error)
    if cause:
        return TrackingUnavailableError(
            f"the tracking server {server} did not answer{while_doing} ({cause}) through "
            f"MLflow's retries (about {retry_seconds():.0f} s: MLFLOW_HTTP_REQUEST_MAX_RETRIES, "
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR); check that it runs and that "
            "MLFLOW_TRACKING_URI names it")
    return None


@contextmanager
def explained_requests(uri: str | None = None, doing: str = "") -> Iterator[None]:
    """Within the block, a refused or unanswered tracking request raises its one-line
    :class:`TrackingAccessError` (the original as its cause); other errors pass unchanged."""
    try:
        yield
    except Exception as error:
        access = tracking_access_error(error, uri, doing)
        if access is None or access is error:
            raise
        raise access from error


# --------------------------------------------------------------------------------- the parts

def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and its causes / contexts (MLflow raises without ``from``)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _http_status(error: BaseException) -> int | None:
    """401 / 403 from MLflow's error code or an HTTP response, else None."""
    for item in _chain(error):
        code = getattr(item, "error_code", None)
        if code == "UNAUTHENTICATED":
            return 401
        if code == "PERMISSION_DENIED":
            return 403
        response = getattr(item, "response", None)
        status = getattr(response, "status_code", None)
        if status in (401, 403):
            return int(status)
    return None


def _connection_failure(error: BaseException) -> str:
    """The cause in a few words when ``error`` is a connection failure after retries, else ""."""
    import requests

    for item in _chain(error):
        if isinstance(item, requests.exceptions.RetryError):
            return "it kept answering with a server error"
        if isinstance(item, requests.exceptions.Timeout):
            return "timed out"
        if isinstance(item, requests.exceptions.ConnectionError):
            text = str(item)
            for words in ("Connection refused", "Name or service not known",
                          "Temporary failure in name resolution", "No route to host",
                          "Connection reset by peer", "Network is unreachable"):
                if words in text:
                    return words.lower()
            return "no connection"
    return ""


def _endpoint(error: BaseException) -> str:
    text = str(error)
    for marker in ("endpoint ", "for url: "):
        if marker in text:
            return f" for {text.split(marker, 1)[1].split()[0]}"
    return ""


def _server(uri: str | None) -> str:
    if uri:
        return uri
    import mlflow

    return mlflow.get_tracking_uri()


def _user() -> str:
    """The user name MLflow sends (environment, else ~/.mlflow/credentials), or ""."""
    try:
        from mlflow.utils.credentials import read_mlflow_creds

        return read_mlflow_creds().username or ""
    except Exception:  # pragma: no cover - an unreadable credentials file
        return os.environ.get("MLFLOW_TRACKING_USERNAME", "")
