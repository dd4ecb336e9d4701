"""The client over HTTP: `Client(url=..., token=...)` (or BACKUP_URL and BACKUP_TOKEN set) is one of
these. It has the in-process client's methods, built from the same contract
(orchestrator/entry/api/contract.py): each checks its arguments as the in-process one does, sends
them to the API service, and returns what the in-process client would, or raises the error the
service reports, with its code and of its class."""

from __future__ import annotations

import functools
from typing import Any, Self

import httpx
from pydantic import ValidationError

from orchestrator import errors
from orchestrator.config import Settings, load_settings
from orchestrator.entry.api.contract import OPERATIONS, Operation
from orchestrator.entry.client import Client
from orchestrator.entry.edge import invalid
from orchestrator.errors import OrchestratorError, ServiceUnavailableError

TIMEOUT = 60.0  # seconds a call may take, beyond a wait's own timeout
ERROR_CLASSES: dict[str, type[OrchestratorError]] = {
    cls.__name__: cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, OrchestratorError)
}


class Transport:
    """One HTTP connection pool to the service, with the token on every call."""

    def __init__(self, url: str, token: str | None, verify: str | bool = True) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=TIMEOUT, verify=verify)
        self.url = url

    def call(self, operation: Operation, body: dict[str, Any], timeout: float | None = None) -> Any:
        try:
            content = operation.request(**body).model_dump_json()
        except ValidationError as exc:  # checked here as the in-process client checks its arguments
            raise invalid(operation.name, [p.name for p in operation.parameters], exc) from None
        try:
            response = self.http.post(
                operation.path,
                content=content,
                headers={"Content-Type": "application/json"},
                timeout=TIMEOUT + (timeout or 0),
            )
        except httpx.HTTPError as exc:
            raise ServiceUnavailableError(
                "ApiUnavailable", f"the API service at {self.url} did not answer ({exc}); retry"
            ) from None
        if response.is_success:
            return operation.result_adapter.validate_python(response.json())
        raise _error(response)

    def close(self) -> None:
        self.http.close()


def _error(response: httpx.Response) -> OrchestratorError:
    try:
        body = response.json()
        code, message = str(body["code"]), str(body["message"])
    except (ValueError, KeyError, TypeError):
        return ServiceUnavailableError(
            "ApiUnavailable", f"the API service answered {response.status_code} without an error code"
        )
    cls = ERROR_CLASSES.get(str(body.get("kind")), OrchestratorError)
    return cls(code, message, field=body.get("field"), details=body.get("details") or None)


def _remote(operation: Operation) -> Any:
    method = operation.method
    names = [p.name for p in operation.parameters]

    @functools.wraps(method)
    def call(self: RemoteClient, *args: Any, **kwargs: Any) -> Any:
        body = dict(zip(names, args, strict=False)) | {k: v for k, v in kwargs.items() if k != "progress"}
        return self._transport.call(operation, body, timeout=_wait_timeout(body))

    return call


def _wait_timeout(body: dict[str, Any]) -> float | None:
    timeout = body.get("timeout")
    return float(timeout) if isinstance(timeout, (int, float)) else None


class RemoteAsOf:
    """The read models at a past instant, asked of the service (each query rebuilds them there)."""

    def __init__(self, transport: Transport, when: Any) -> None:
        self._transport = transport
        self.when = when

    def __getattr__(self, name: str) -> Any:
        operation = OPERATIONS.get(f"as_of.{name}")
        if operation is None:
            raise AttributeError(name)

        def query(**kwargs: Any) -> Any:
            return self._transport.call(operation, {"when": self.when, **kwargs})

        return query

    def close(self) -> None:
        """Nothing is held here: each query is rebuilt by the service."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class RemoteClient(Client):
    def __init__(self, settings: Settings | None = None, **overrides: Any) -> None:
        overrides = {k: v for k, v in overrides.items() if k not in ("start_services", "clock")}
        self.settings = settings or load_settings(**overrides)
        assert self.settings.url is not None
        token = self.settings.token.get_secret_value() if self.settings.token else None
        self._transport = Transport(self.settings.url, token, str(self.settings.tls_ca_file or "") or True)

    def as_of(self, when: Any, progress: Any = None) -> Any:
        return RemoteAsOf(self._transport, when)

    def close(self) -> None:
        self._transport.close()


for _name, _operation in OPERATIONS.items():
    if not _operation.as_of:
        setattr(RemoteClient, _name, _remote(_operation))
