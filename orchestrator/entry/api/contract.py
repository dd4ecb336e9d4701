"""The client contract over HTTP: which of the client's methods the API service serves, the role each
needs and how the vault it acts on is found; and, for each, its request body (a pydantic model made
from the method's own signature) and its result's type (the method's return annotation). The server
(orchestrator/entry/api/server.py) and the HTTP client (orchestrator/entry/api/remote.py) are both
built from this one table, so the two cannot drift from the in-process client."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, create_model

from orchestrator.domain.identity import Role
from orchestrator.entry.client import Client
from orchestrator.entry.queries import ReadModels


class Scope(str, Enum):
    """Where an operation's vault comes from, for an identity that holds its role on one vault."""

    VAULT = "vault_id"  # the `vault_id` argument
    RECOVERY_POINT = "recovery_point_id"  # the point's vault
    JOB = "job_id"  # the job's vault
    JOBS = "job_ids"  # every job's vault
    FILTER = "filter"  # an optional `vault_id` filter: an identity on one vault sees that vault only
    ROWS = "rows"  # a list of rows with their `vault_id`: an identity on one vault gets that vault's only
    RESULT = "result"  # the result names the vault (`vault_id`): checked once it is known
    GUARD = "guard"  # the `guard` argument: a guard admin on one guard acts on that guard only
    GLOBAL = "global"  # no one vault: only an identity on every vault


@dataclass(frozen=True)
class Operation:
    name: str
    role: Role
    scope: Scope
    method: Callable[..., Any]  # the in-process client's (or, under "as_of.", the read models')
    as_of: bool = False  # a read-model query asked of the read models at a past instant

    @property
    def path(self) -> str:
        return f"/v1/{self.name.replace('.', '/')}"

    @functools.cached_property
    def parameters(self) -> list[inspect.Parameter]:
        """The method's parameters that travel (not `self`, not a progress callback)."""
        found = list(inspect.signature(self.method).parameters.values())[1:]
        return [p for p in found if p.name != "progress"]

    @functools.cached_property
    def request(self) -> type[BaseModel]:
        """The request body: the method's parameters as fields, strict like the client's own edge
        (orchestrator/entry/edge.py) but for times, which JSON can only carry as text."""
        hints = typing.get_type_hints(self.method)
        fields: dict[str, Any] = {}
        if self.as_of:
            fields["when"] = (Annotated[datetime, Field(strict=False)], ...)
        for p in self.parameters:
            annotation = hints[p.name]
            if _holds_time(annotation):
                annotation = Annotated[annotation, Field(strict=False)]
            default = ... if p.default is inspect.Parameter.empty else p.default
            fields[p.name] = (annotation, default)
        model_name = "".join(part.title() for part in self.name.replace(".", "_").split("_")) + "Request"
        return create_model(model_name, __config__=ConfigDict(strict=True, extra="forbid"), **fields)

    @functools.cached_property
    def result(self) -> Any:
        """The result's type, as the in-process client returns it."""
        return typing.get_type_hints(self.method)["return"]

    @functools.cached_property
    def result_adapter(self) -> TypeAdapter[Any]:
        return TypeAdapter(self.result)


def _holds_time(annotation: Any) -> bool:
    return annotation in (datetime, AwareDatetime) or any(_holds_time(a) for a in typing.get_args(annotation))


R, OP, C, W, GA = Role.READER, Role.OPERATOR, Role.CONTRIBUTOR, Role.OWNER, Role.GUARD_ADMIN
S = Scope
_CLIENT = {
    # reading
    "vaults": (R, S.ROWS),
    "vault_id": (R, S.RESULT),
    "jobs": (R, S.FILTER),
    "job": (R, S.JOB),
    "wait": (R, S.JOB),
    "wait_all": (R, S.JOBS),
    "protected_items": (R, S.VAULT),
    "recovery_points": (R, S.VAULT),
    "policies": (R, S.VAULT),
    "dashboard": (R, S.FILTER),
    "history": (R, S.FILTER),
    "check_vault": (R, S.VAULT),
    "collection": (R, S.VAULT),
    "health": (R, S.GLOBAL),
    "audit_verify": (R, S.GLOBAL),
    "audit_replay": (R, S.GLOBAL),
    "guards": (R, S.GLOBAL),
    # operating
    "discover": (OP, S.VAULT),
    "register": (OP, S.VAULT),
    "protect": (OP, S.VAULT),
    "precheck": (OP, S.VAULT),
    "backup_now": (OP, S.VAULT),
    "restore": (OP, S.RECOVERY_POINT),
    "restore_keys": (OP, S.RECOVERY_POINT),
    "undelete": (OP, S.VAULT),
    "verify": (OP, S.VAULT),
    # contributing
    "create_vault": (C, S.GLOBAL),
    "set_replication": (C, S.VAULT),
    "set_soft_delete": (C, S.VAULT),
    "set_immutability": (C, S.VAULT),
    "create_policy": (C, S.VAULT),
    "update_policy": (C, S.VAULT),
    "change_policy": (C, S.VAULT),
    "stop_protection": (C, S.VAULT),
    "unregister": (C, S.VAULT),
    "run_retention": (C, S.VAULT),
    "run_scheduler": (C, S.GLOBAL),
    "attach_guard": (C, S.VAULT),
    "detach_guard": (C, S.VAULT),
    # owning
    "create_identity": (W, S.FILTER),
    "revoke_identity": (W, S.GLOBAL),
    "identities": (W, S.GLOBAL),
    "create_guard": (W, S.GLOBAL),
    "delete_vault": (W, S.VAULT),
    "rewrap_vault_keys": (W, S.GLOBAL),
    # approving (guard_admin, which no other role holds)
    "approve_operation": (GA, S.GUARD),
    "approvals": (GA, S.GUARD),
}
# The read models at a past instant (`Client.as_of(when).<query>`): the queries' own roles and scopes.
_AS_OF = ("vaults", "jobs", "protected_items", "recovery_points", "policies", "dashboard")

OPERATIONS: dict[str, Operation] = {
    name: Operation(name, role, scope, getattr(Client, name)) for name, (role, scope) in _CLIENT.items()
} | {
    f"as_of.{name}": Operation(f"as_of.{name}", *_CLIENT[name], getattr(ReadModels, name), as_of=True)
    for name in _AS_OF
}
# The in-process client's methods that stay in the process: its own lifetime, the server's use of it.
LOCAL_ONLY = frozenset({"close", "as_of", "authenticate", "calling_as", "vault_of"})
