"""Names, one validated type per kind: what commands, the inventory and the settings accept.

Each kind has one rule (`NameRule`), with the stable code of its error. As a pydantic type
(`VaultName`, `VmName`, ...) a bad name fails validation with that code as the error's type, so a
command refused for a name says `VaultNameInvalid` and not a generic `CommandInvalid`, and the
inventory says what the rule is. Names end up in ids, paths and logs: none of them may hold a path
separator, a control character or more characters than its kind allows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import cache
from typing import Annotated, Any
from uuid import NAMESPACE_URL, UUID, uuid5
from zoneinfo import ZoneInfo, available_timezones

from pydantic import AfterValidator, StrictStr
from pydantic_core import PydanticCustomError

from orchestrator.errors import DomainError

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class NameRule:
    """A kind of name: the `code` of its error, the `field` it is given in, the characters it may
    hold (`chars`, a regex character class), its first and last character, and its lengths."""

    kind: str  # "vault name", "VM name", ...
    code: str
    field: str
    chars: str  # e.g. "A-Za-z0-9-"
    allowed: str  # the same, in words
    lengths: tuple[int, int]
    first: str = ""  # a character class the first character must be in ("": any of `chars`)
    first_words: str = ""
    last: str = ""  # the same for the last character
    last_words: str = ""

    def problem(self, value: str) -> tuple[str, str] | None:
        """(rule, message) when `value` breaks the rule, else None. The rules, in the order checked:
        required, length, first_character, characters, last_character."""
        low, high = self.lengths
        if not value:
            return "required", f"a {self.kind} is required ({low}-{high} characters)"
        shown = repr(value) if len(value) <= 80 else repr(value[:80])[:-1] + "...'"
        if not low <= len(value) <= high:
            return "length", f"{self.kind} {shown} has {len(value)} characters; it must have {low} to {high}"
        if self.first and not re.fullmatch(f"[{self.first}]", value[0]):
            return "first_character", f"{self.kind} {shown} must start with {self.first_words}"
        bad = next((c for c in value if not re.fullmatch(f"[{self.chars}]", c)), None)
        if bad is not None:
            what = "a control character" if _CONTROL.fullmatch(bad) else repr(bad)
            return "characters", f"{self.kind} {shown} contains {what}; only {self.allowed} are allowed"
        if self.last and not re.fullmatch(f"[{self.last}]", value[-1]):
            return "last_character", f"{self.kind} {shown} must end with {self.last_words}"
        return None

    def check(self, value: str, field: str | None = None) -> str:
        """`value`, or DomainError with this rule's code (the field given or the rule's own)."""
        found = self.problem(value)
        if found is not None:
            rule, message = found
            raise DomainError(
                self.code,
                message,
                field=field or self.field,
                details=[{"rule": rule, "name": value[:200], "field": field or self.field}],
            )
        return value

    def validator(self, value: str) -> str:
        """The pydantic form of `check`: the error's type is the rule's code."""
        found = self.problem(value)
        if found is not None:
            rule, message = found
            raise PydanticCustomError(self.code, "{message}", {"message": message, "rule": rule})
        return value


LETTER, LETTER_WORDS = "A-Za-z", "a letter (A-Z)"
ALNUM, ALNUM_WORDS = "A-Za-z0-9", "a letter or a digit"

VAULT = NameRule(
    "vault name",
    "VaultNameInvalid",
    "name",
    "A-Za-z0-9-",
    "ASCII letters, digits and hyphens",
    (2, 50),
    LETTER,
    LETTER_WORDS,
    ALNUM,
    ALNUM_WORDS,
)
SUBSCRIPTION = NameRule(
    "subscription",
    "SubscriptionInvalid",
    "subscription",
    "A-Za-z0-9._-",
    "ASCII letters, digits, '.', '_' and '-'",
    (1, 64),
    ALNUM,
    ALNUM_WORDS,
)
RESOURCE_GROUP = NameRule(
    "resource group",
    "ResourceGroupInvalid",
    "resource_group",
    "A-Za-z0-9_.()-",
    "ASCII letters, digits, '_', '-', '.', '(' and ')'",
    (1, 90),
    last="A-Za-z0-9_()-",
    last_words="anything but '.'",
)
REGION = NameRule(
    "region",
    "RegionInvalid",
    "region",
    "a-z0-9",
    "lowercase letters and digits (such as 'japaneast')",
    (2, 40),
    "a-z",
    "a lowercase letter",
)
VM = NameRule(
    "VM name",
    "VmNameInvalid",
    "vm_name",
    "A-Za-z0-9_.-",
    "ASCII letters, digits, '_', '.' and '-'",
    (1, 64),
    ALNUM,
    ALNUM_WORDS,
    "A-Za-z0-9_",
    "a letter, a digit or '_' (not '.' or '-')",
)
CLOUD_SERVICE = NameRule(
    "cloud service",
    "CloudServiceInvalid",
    "cloud_service",
    "A-Za-z0-9-",
    "ASCII letters, digits and hyphens",
    (1, 63),
    ALNUM,
    ALNUM_WORDS,
    ALNUM,
    ALNUM_WORDS,
)
POLICY = NameRule(
    "policy name",
    "PolicyNameInvalid",
    "name",
    "A-Za-z0-9_-",
    "ASCII letters, digits, '-' and '_'",
    (3, 150),
    LETTER,
    LETTER_WORDS,
)
DISK = NameRule(
    "disk name",
    "DiskNameInvalid",
    "name",
    "A-Za-z0-9._-",
    "ASCII letters, digits, '.', '_' and '-'",
    (1, 80),
    "A-Za-z0-9_-",
    "a letter, a digit, '_' or '-' (not '.')",
)
KEY_VAULT = NameRule(
    "key vault name",
    "KeyVaultNameInvalid",
    "key_vault",
    "A-Za-z0-9-",
    "ASCII letters, digits and hyphens",
    (3, 24),
    LETTER,
    LETTER_WORDS,
    ALNUM,
    ALNUM_WORDS,
)
KEY_OR_SECRET = NameRule(
    "key or secret name", "KeyOrSecretNameInvalid", "name", "A-Za-z0-9-", "ASCII letters, digits and hyphens", (1, 127)
)
# Who an operator is on the events they cause. ':' is the product's own: its workers and services act
# as `worker:<principal>` and `system:<service>`, and no operator may pose as one of them.
PRINCIPAL = NameRule(
    "principal",
    "PrincipalInvalid",
    "BACKUP_PRINCIPAL",
    r"A-Za-z0-9._@+\\$-",
    "ASCII letters, digits, '.', '_', '@', '+', '\\', '$' and '-' (':' is reserved for the "
    "product's own principals, worker:... and system:...)",
    (1, 200),
    "A-Za-z0-9_",
    "a letter, a digit or '_'",
)
# An identity of the API service (orchestrator/domain/identity.py): it is the principal on the events
# its calls cause, so it holds no ':' either.
IDENTITY = NameRule(
    "identity name",
    "IdentityNameInvalid",
    "name",
    "A-Za-z0-9._@-",
    "ASCII letters, digits, '.', '_', '@' and '-'",
    (1, 64),
    ALNUM,
    ALNUM_WORDS,
)
# A resource guard (orchestrator/domain/guard.py): named as a vault is.
GUARD = replace(VAULT, kind="resource guard name", code="GuardNameInvalid", field="guard")


def _typed(rule: NameRule) -> Any:
    return Annotated[StrictStr, AfterValidator(rule.validator)]


VaultName = _typed(VAULT)
SubscriptionName = _typed(SUBSCRIPTION)
ResourceGroupName = _typed(RESOURCE_GROUP)
RegionName = _typed(REGION)
VmName = _typed(VM)
CloudServiceName = _typed(CLOUD_SERVICE)
PolicyName = _typed(POLICY)
DiskName = _typed(DISK)
KeyVaultName = _typed(KEY_VAULT)
KeyOrSecretName = _typed(KEY_OR_SECRET)
Principal = _typed(PRINCIPAL)
IdentityName = _typed(IDENTITY)
GuardName = _typed(GUARD)


def vm_reference_problem(value: str) -> tuple[str, str] | None:
    """A VM is named `name`, or `qualifier/name` (its cloud service or resource group, for VMs that
    share a name): (rule, message) when `value` is neither."""
    qualifier, slash, name = value.rpartition("/")
    found = VM.problem(name)
    if found is not None or not slash:
        return found
    if RESOURCE_GROUP.problem(qualifier) is not None and CLOUD_SERVICE.problem(qualifier) is not None:
        return "qualifier", f"{value[:80]!r}: what comes before '/' must be a cloud service or a resource group name"
    return None


def check_vm_reference(value: str, field: str = "vm_name") -> str:
    found = vm_reference_problem(value)
    if found is not None:
        raise DomainError(
            VM.code, found[1], field=field, details=[{"rule": found[0], "name": value[:200], "field": field}]
        )
    return value


def _vm_reference(value: str) -> str:
    found = vm_reference_problem(value)
    if found is not None:
        raise PydanticCustomError(VM.code, "{message}", {"message": found[1], "rule": found[0]})
    return value


VmReference = Annotated[StrictStr, AfterValidator(_vm_reference)]

CODES = frozenset(
    rule.code
    for rule in (
        VAULT,
        SUBSCRIPTION,
        RESOURCE_GROUP,
        REGION,
        VM,
        CLOUD_SERVICE,
        POLICY,
        DISK,
        KEY_VAULT,
        KEY_OR_SECRET,
        PRINCIPAL,
        IDENTITY,
        GUARD,
    )
) | {"TimeZoneUnknown"}


@cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def check_timezone(name: str) -> ZoneInfo:
    """An IANA time zone that this system's zone database holds ('UTC', 'Asia/Tokyo')."""
    if not isinstance(name, str) or name not in _zones():
        shown = repr(name[:80]) if isinstance(name, str) else type(name).__name__
        raise DomainError("TimeZoneUnknown", f"{shown} is not an IANA time zone such as 'Asia/Tokyo'", field="timezone")
    return ZoneInfo(name)


def _zone(value: str) -> str:
    try:
        check_timezone(value)
    except DomainError as exc:
        raise PydanticCustomError(exc.code, "{message}", {"message": exc.message, "rule": "unknown"}) from None
    return value


TimeZoneName = Annotated[StrictStr, AfterValidator(_zone)]


def vault_id_for(subscription: str, name: str) -> UUID:
    """Vault names are unique per subscription, case-insensitively, so the id derives from both."""
    return uuid5(NAMESPACE_URL, f"/subscriptions/{subscription.lower()}/vaults/{name.lower()}")


def guard_id_for(name: str) -> UUID:
    """Guard names are unique, case-insensitively, so the id derives from the name."""
    return uuid5(NAMESPACE_URL, f"/resource-guards/{name.lower()}")
