"""A VM as the backup service knows it: which vault it belongs to, and its status there."""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from orchestrator.domain.base import Aggregate
from orchestrator.domain.values import ItemStatus, VmRef
from orchestrator.errors import DomainError


def item_id_for(vm_key: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"/vms/{vm_key.lower()}")


class VirtualMachine(Aggregate):
    """One per VM ever registered; a VM belongs to at most one vault at a time."""

    TOPIC = "backup.vm"

    class Created(Aggregate.Created):
        TOPIC = "backup.vm.registration_requested"
        vm: VmRef
        vault_id: UUID
        vault_name: str
        job_id: UUID

    class RegistrationRequested(Aggregate.Event):
        TOPIC = "backup.vm.reregistration_requested"
        vm: VmRef
        vault_id: UUID
        vault_name: str
        job_id: UUID

    class Registered(Aggregate.Event):
        TOPIC = "backup.vm.registered"
        job_id: UUID
        extension_version: str

    class RegistrationFailed(Aggregate.Event):
        TOPIC = "backup.vm.registration_failed"
        job_id: UUID
        error_code: str

    class Unregistered(Aggregate.Event):
        TOPIC = "backup.vm.unregistered"
        job_id: UUID

    @staticmethod
    def create_id(vm: VmRef) -> UUID:
        return item_id_for(vm.key)

    @event(Created)
    def __init__(self, vm: VmRef, vault_id: UUID, vault_name: str, job_id: UUID) -> None:
        self.vm = vm
        self._start_registration(vault_id, vault_name, job_id)

    def _start_registration(self, vault_id: UUID, vault_name: str, job_id: UUID) -> None:
        self.vault_id = vault_id
        self.vault_name = vault_name
        self.job_id = job_id
        self.status = ItemStatus.REGISTERING
        self.extension_version = ""

    def check_can_register(self, vault_id: UUID) -> None:
        if not self.status.holds_vm:
            return
        if self.vault_id == vault_id:
            raise DomainError(
                "VmAlreadyRegistered",
                f"VM {self.vm.display_name} is already {self.status.value} in this vault",
                field="vm_names",
            )
        raise DomainError(
            "VmInAnotherVault",
            f"VM {self.vm.display_name} is {self.status.value} in vault {self.vault_name!r}; "
            "unregister it there first (a VM belongs to one vault at a time)",
            field="vm_names",
        )

    @event(RegistrationRequested)
    def request_registration(self, vm: VmRef, vault_id: UUID, vault_name: str, job_id: UUID) -> None:
        self.vm = vm
        self._start_registration(vault_id, vault_name, job_id)

    @event(Registered)
    def registered(self, job_id: UUID, extension_version: str) -> None:
        self.status = ItemStatus.REGISTERED
        self.extension_version = extension_version

    @event(RegistrationFailed)
    def registration_failed(self, job_id: UUID, error_code: str) -> None:
        self.status = ItemStatus.REGISTRATION_FAILED

    def check_can_unregister(self, vault_id: UUID) -> None:
        if self.vault_id != vault_id or self.status is not ItemStatus.REGISTERED:
            raise DomainError(
                "VmNotRegistered",
                f"VM {self.vm.display_name} is not registered in this vault "
                f"(status: {self.status.value})",
                field="vm_name",
            )

    @event(Unregistered)
    def unregister(self, job_id: UUID) -> None:
        self.status = ItemStatus.UNREGISTERED
