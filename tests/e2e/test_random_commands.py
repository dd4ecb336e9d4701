"""Random command sequences through the client (hypothesis stateful testing): no unhandled
exception, refused commands store nothing, and the invariants hold after every step: a VM in at
most one vault, one policy per protected item, at most one backup in progress per item."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from orchestrator import Client, OrchestratorError
from orchestrator.fabric.sample import vm_entry, write_fabric
from tests.helpers import event_count

R = "japaneast"
VMS = ["vm1", "vm2", "vm3", "vm4"]
VAULTS = ["vault-a", "vault-b"]
POLICIES = ["DefaultPolicy", "Weekly"]
HOLDS_VM = (
    "registering",
    "registered",
    "protected_initial_backup_pending",
    "protected",
    "protection_error",
    "protection_stopped",
)

_FABRIC_DIR = Path(tempfile.mkdtemp(prefix="random-commands-"))
atexit.register(shutil.rmtree, _FABRIC_DIR, ignore_errors=True)  # made at import: gone when the run ends
FABRIC = write_fabric(
    _FABRIC_DIR / "fabric",
    {
        "default": [vm_entry(v, R) for v in VMS]
        + [vm_entry("west", "japanwest"), vm_entry("noagent", R, agent={"installed": False})]
    },
    disk_mib=1,
)

# Mostly VMs that can be registered, sometimes one that cannot (another region, no agent, unknown).
vm_names = st.sampled_from([*VMS, *VMS, *VMS, "west", "noagent", "ghost"])
vault_names = st.sampled_from(VAULTS)


class Operator(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="random-commands-data-")
        self.client = Client(data_dir=Path(self.dir.name), fabric=FABRIC, principal="ops", scheduler_interval=3600)
        self.vaults: dict[str, str] = {}
        for name in VAULTS:
            self.vaults[name] = self.client.create_vault(name, R, "rg")
            self.client.wait(self.client.discover(self.vaults[name]))

    def teardown(self) -> None:
        if hasattr(self, "client"):
            self.client.close()
            self.dir.cleanup()

    def attempt(self, command: str, *args: object) -> object:
        """Run a client command; a refusal must name its code and store nothing."""
        before = event_count(self.client)
        try:
            return getattr(self.client, command)(*args)
        except OrchestratorError as exc:
            assert exc.code and exc.message
            assert event_count(self.client) == before, f"{command} refused with {exc.code} but stored events"
            return None

    def vault(self, name: str) -> str:
        return self.vaults[name]

    @rule(name=st.sampled_from([*VAULTS, "vault-c", "1bad"]), replication=st.sampled_from(["geo", "local", "zone"]))
    def create_vault(self, name: str, replication: str) -> None:
        created = self.attempt("create_vault", name, R, "rg", "default", "recovery_services", replication)
        assert created is None or name not in VAULTS  # the two vaults exist already

    @rule(name=vault_names, replication=st.sampled_from(["geo", "local"]))
    def set_replication(self, name: str, replication: str) -> None:
        self.attempt("set_replication", self.vault(name), replication)

    @rule(name=vault_names, vms=st.lists(vm_names, min_size=1, max_size=2, unique=True))
    def register(self, name: str, vms: list[str]) -> None:
        jobs = self.attempt("register", self.vault(name), vms)
        if jobs:
            self.client.wait_all(jobs)  # type: ignore[arg-type]

    @rule(name=vault_names, vm=vm_names)
    def unregister(self, name: str, vm: str) -> None:
        self.attempt("unregister", self.vault(name), vm)

    @rule(name=vault_names)
    def create_weekly_policy(self, name: str) -> None:
        self.attempt(
            "create_policy",
            self.vault(name),
            "Weekly",
            {"frequency": "weekly", "times": ["02:00"], "weekdays": ["sunday"]},
            {"weekly": {"weekdays": ["sunday"], "weeks": 4}},
        )

    @rule(
        name=vault_names, vms=st.lists(vm_names, min_size=1, max_size=2, unique=True), policy=st.sampled_from(POLICIES)
    )
    def protect(self, name: str, vms: list[str], policy: str) -> None:
        jobs = self.attempt("protect", self.vault(name), vms, policy)
        if jobs:
            self.client.wait_all(jobs)  # type: ignore[arg-type]

    @rule(name=vault_names, vm=st.sampled_from(VMS))
    def register_and_protect(self, name: str, vm: str) -> None:
        """An operator's usual pair of steps, so that sequences reach protected VMs and backups often."""
        self.register(name, [vm])
        self.protect(name, [vm], "DefaultPolicy")

    @rule(name=vault_names, vm=vm_names, policy=st.sampled_from(POLICIES))
    def change_policy(self, name: str, vm: str, policy: str) -> None:
        self.attempt("change_policy", self.vault(name), vm, policy)

    @rule(name=vault_names, vm=vm_names, delete=st.booleans())
    def stop_protection(self, name: str, vm: str, delete: bool) -> None:
        job = self.attempt("stop_protection", self.vault(name), vm, delete)
        if job:
            self.client.wait(str(job))

    @rule(name=vault_names, vm=vm_names, wait=st.booleans())
    def backup_now(self, name: str, vm: str, wait: bool) -> None:
        job = self.attempt("backup_now", self.vault(name), vm)
        if job and wait:
            self.client.wait(str(job))

    @invariant()
    def a_vm_belongs_to_at_most_one_vault(self) -> None:
        if not hasattr(self, "client"):
            return
        holders = Counter(
            i.vm_key
            for v in self.vaults.values()
            for i in self.client.protected_items(v, include_former=True)
            if i.status in HOLDS_VM
        )
        assert all(n == 1 for n in holders.values()), holders

    @invariant()
    def one_policy_per_protected_item_and_one_backup_at_a_time(self) -> None:
        if not hasattr(self, "client"):
            return
        for vault_id in self.vaults.values():
            items = self.client.protected_items(vault_id)
            active = [i for i in items if i.status.startswith("protected") and i.status != "protection_stopped"]
            assert all(i.policy_id for i in active), [(i.vm_name, i.status) for i in active]
            policies = {p.policy_id: p.item_count for p in self.client.policies(vault_id)}
            assert Counter(i.policy_id for i in active) == Counter({k: n for k, n in policies.items() if n}), policies
        running = Counter(j.vm_name for j in self.client.jobs(status="in_progress", operation="backup"))
        assert all(n == 1 for n in running.values()), running


Operator.TestCase.settings = settings(
    max_examples=25, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_random_command_sequences = pytest.mark.filterwarnings("ignore")(Operator.TestCase)
