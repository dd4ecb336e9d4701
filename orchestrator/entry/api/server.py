"""The API service: the client contract over HTTP (FastAPI on uvicorn), one POST endpoint per
operation of orchestrator/entry/api/contract.py, each described in the OpenAPI document at
/openapi.json.

Every call carries an API token (`Authorization: Bearer <token>`, from `backupctl identity create`):
no token, or one no identity holds, is 401 `Unauthenticated`; an identity whose role is too weak, or
that holds its role on another vault, is 403 `NotAuthorized` naming the role that would do. The
events a call causes carry the identity's name as their principal, never a value of the call's.

On the embedded default the server's one client owns the data dir and runs every service in this
process (queue, workers, dispatcher, projections, scheduler); distributed, it is one of any number of
stateless replicas in front of PostgreSQL and Redis."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestrator.domain.identity import Caller, Role
from orchestrator.domain.names import guard_id_for
from orchestrator.entry.api.contract import OPERATIONS, Operation, Scope
from orchestrator.entry.client import Client
from orchestrator.errors import (
    ConcurrencyError,
    DomainError,
    NotFoundError,
    OrchestratorError,
    ServiceUnavailableError,
    SettingsError,
)

log = logging.getLogger(__name__)
STATUS: tuple[tuple[type[OrchestratorError], int], ...] = (
    (NotFoundError, 404),
    (ServiceUnavailableError, 503),
    (ConcurrencyError, 409),
    (DomainError, 409),
    (SettingsError, 500),
)
CODE_STATUS = {
    "Unauthenticated": 401,
    "NotAuthorized": 403,
    "MultiUserAuthorizationRequired": 403,
    "CommandInvalid": 422,
    "WaitTimeout": 504,
}


HTTP_CODES = {
    404: ("OperationNotFound", "no operation at this path: every operation is POST /v1/<method> (see /openapi.json)"),
    405: ("MethodNotAllowed", "every operation is called with POST (see /openapi.json)"),
}


class ErrorBody(BaseModel):
    """Every refusal and failure: the stable code, what to do, and the class the client raises."""

    code: str
    message: str
    field: str | None = None
    details: list[dict[str, Any]] = []
    kind: str = "OrchestratorError"


def status_of(exc: OrchestratorError) -> int:
    if exc.code in CODE_STATUS:
        return CODE_STATUS[exc.code]
    return next((status for cls, status in STATUS if isinstance(exc, cls)), 400)


def error_response(exc: OrchestratorError) -> JSONResponse:
    body = ErrorBody(**exc.as_dict(), kind=type(exc).__name__)
    headers = {"WWW-Authenticate": "Bearer"} if exc.code == "Unauthenticated" else None
    return JSONResponse(body.model_dump(mode="json"), status_code=status_of(exc), headers=headers)


class Authorizer:
    """Who a call is, and whether they may make it."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def caller(self, token: str | None) -> Caller:
        found = self.client.authenticate(token) if token else None
        if found is None:
            raise OrchestratorError(
                "Unauthenticated",
                "this call needs an API token (Authorization: Bearer <token>) of an identity that is not revoked: "
                "`backupctl identity create` makes one",
            )
        return found

    def check(self, caller: Caller, operation: Operation, args: dict[str, Any]) -> dict[str, Any]:
        """Refuse the call unless `caller` holds the role on the vaults it acts on; returns the
        arguments, a one-vault identity's filter set to its vault."""
        if not caller.role.holds(operation.role):
            raise self._refusal(caller, operation, f"needs the {operation.role.value} role")
        if operation.name == "create_identity" and args.get("role") == Role.GUARD_ADMIN.value:
            raise OrchestratorError(
                "NotAuthorized",
                "the API service makes no guard admin: guard_admin identities are made with local access to the "
                "data dir (`backupctl identity create` on the server's machine, without BACKUP_URL), so that no "
                "identity of the service can make the second identity a critical operation needs",
                field="role",
            )
        if operation.scope is Scope.GUARD:
            return self._check_guard(caller, operation, args)
        if caller.vault_id is None or operation.scope in (Scope.RESULT, Scope.ROWS):
            return args
        mine = caller.vault_id
        if operation.scope is Scope.FILTER:
            if args.get("vault_id") in (None, mine):
                return {**args, "vault_id": mine}
            raise self._refusal(caller, operation, f"acts on vault {args['vault_id']}")
        if operation.scope is Scope.GLOBAL:
            raise self._refusal(caller, operation, "acts on every vault")
        other = next((vault for vault in self._vaults_of(operation.scope, args) if vault != mine), None)
        if other is not None:
            raise self._refusal(caller, operation, f"acts on vault {other}")
        return args

    def _check_guard(self, caller: Caller, operation: Operation, args: dict[str, Any]) -> dict[str, Any]:
        """A guard admin on one guard acts on that guard only (which vaults it guards, the guard says)."""
        if caller.guard_id is not None and str(guard_id_for(str(args["guard"]))) != caller.guard_id:
            raise OrchestratorError(
                "NotAuthorized",
                f"{operation.name} acts on resource guard {args['guard']!r}: identity {caller.name!r} is guard_admin "
                f"on another guard; guard_admin on that guard (or on every guard) would do",
                details=[{"needed_role": operation.role.value, "role": caller.role.value}],
            )
        return args

    def narrow(self, caller: Caller, operation: Operation, result: Any) -> Any:
        """The result as the caller may see it: a one-vault identity's rows of its vault only, and
        no vault's id but its own."""
        if caller.vault_id is None:
            return result
        if operation.scope is Scope.ROWS:
            return [row for row in result if row.vault_id == caller.vault_id]
        if operation.scope is Scope.RESULT and str(result) != caller.vault_id:
            raise self._refusal(caller, operation, "names another vault")
        return result

    def _vaults_of(self, scope: Scope, args: dict[str, Any]) -> list[str]:
        if scope is Scope.VAULT:
            return [str(args["vault_id"])]
        if scope is Scope.RECOVERY_POINT:
            return [self.client.vault_of(args["recovery_point_id"], "recovery_point_id")]
        ids = [args["job_id"]] if scope is Scope.JOB else list(args["job_ids"])
        return [self.client.vault_of(j, "job_id") for j in ids]

    @staticmethod
    def _refusal(caller: Caller, operation: Operation, why: str) -> OrchestratorError:
        where = "on every vault" if operation.scope is Scope.GLOBAL else "on its vault (or on every vault)"
        scope = f"on vault {caller.vault_id}" if caller.vault_id else "on every vault"
        return OrchestratorError(
            "NotAuthorized",
            f"{operation.name} {why}: identity {caller.name!r} is {caller.role.value} {scope}; "
            f"the {operation.role.value} role {where} would do",
            details=[{"needed_role": operation.role.value, "role": caller.role.value}],
        )


def create_app(client: Client) -> FastAPI:
    """The API over `client` (an in-process one, which this app uses from its request threads)."""
    app = FastAPI(
        title="backup-orchestrator",
        version="1",
        description="The backup orchestrator's client contract. Every call needs a bearer token.",
    )
    authorizer = Authorizer(client)
    bearer = HTTPBearer(auto_error=False)

    def caller(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Caller:  # noqa: B008
        return authorizer.caller(credentials.credentials if credentials else None)

    @app.exception_handler(OrchestratorError)
    def refused(_: Request, exc: OrchestratorError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        loc = [str(part) for part in (errors[0]["loc"] if errors else ()) if part != "body"]
        field = loc[0] if loc else "body"
        message = errors[0]["msg"] if errors else "the request body is not valid"
        return error_response(
            OrchestratorError(
                "CommandInvalid",
                f"{'.'.join(loc) or 'body'}: {message}",
                field=field,
                details=[
                    {"field": ".".join(str(p) for p in e["loc"] if p != "body"), "rule": e["type"], "message": e["msg"]}
                    for e in errors
                ],
            )
        )

    @app.exception_handler(StarletteHTTPException)
    def http_refused(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        """The framework's own refusals (no such path, another method than POST) in our error body."""
        code, message = HTTP_CODES.get(exc.status_code, ("RequestInvalid", str(exc.detail)))
        body = ErrorBody(code=code, message=message, kind="OrchestratorError")
        return JSONResponse(body.model_dump(mode="json"), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    def failed(_: Request, exc: Exception) -> JSONResponse:
        log.exception("the call failed")
        return error_response(OrchestratorError("InternalError", "the service failed on this call; its log says why"))

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        """For load balancers and compose's health check (no token needed): 200 when the stores and
        the queue answer and the read models keep up, else 503."""
        try:
            healthy = bool(client.health().get("healthy"))
        except OrchestratorError:
            healthy = False
        return JSONResponse({"healthy": healthy}, status_code=200 if healthy else 503)

    for operation in OPERATIONS.values():
        _route(app, client, authorizer, operation, caller)
    return app


def _route(app: FastAPI, client: Client, authorizer: Authorizer, operation: Operation, caller: Any) -> None:
    request_model = operation.request
    responses: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 422, 500, 503)
    }

    def endpoint(body: request_model, who: Caller = Depends(caller)) -> Any:  # type: ignore[valid-type]  # noqa: B008
        args = authorizer.check(who, operation, body.model_dump(exclude_unset=False))  # type: ignore[attr-defined]
        with client.calling_as(who.name):
            result = _call(client, operation, args)
        return operation.result_adapter.dump_python(authorizer.narrow(who, operation, result), mode="json")

    endpoint.__name__ = operation.name.replace(".", "_")
    endpoint.__annotations__ = {"body": request_model, "who": Caller}  # a class made at run time, not a name
    app.post(
        operation.path,
        summary=(operation.method.__doc__ or operation.name).strip().split("\n")[0],
        description=(operation.method.__doc__ or "").strip(),
        responses=responses,
        openapi_extra={"x-role": operation.role.value, "x-scope": operation.scope.value},
        tags=[operation.role.value],
    )(endpoint)


def _call(client: Client, operation: Operation, args: dict[str, Any]) -> Any:
    if operation.as_of:
        when = args.pop("when")
        with client.as_of(when) as past:
            return getattr(past, operation.name.split(".", 1)[1])(**args)
    return getattr(client, operation.name)(**args)


def serve(client: Client, host: str, port: int, *, certfile: str | None = None, keyfile: str | None = None) -> None:
    """Serve until interrupted (uvicorn; TLS when given a certificate and its key)."""
    import signal

    import uvicorn

    # uvicorn stops gracefully on SIGTERM and then raises the signal again to its former handler; with
    # this one that is the end of it, and the process exits 0 as the other services do on SIGTERM.
    signal.signal(signal.SIGTERM, lambda *_: None)
    uvicorn.run(
        create_app(client),
        host=host,
        port=port,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
        log_level="info",
        access_log=False,
    )
