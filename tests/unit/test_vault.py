from __future__ import annotations

from uuid import UUID, uuid4

import pytest

from orchestrator import Client, OrchestratorError
from orchestrator.domain import Vault
from tests.helpers import event_count

INVALID_NAMES = [
    ("", "VaultNameInvalid", "required"),
    ("a", "VaultNameInvalid", "length"),
    ("v" * 51, "VaultNameInvalid", "length"),
    ("1vault", "VaultNameInvalid", "first_character"),
    ("-vault", "VaultNameInvalid", "first_character"),
    ("my_vault", "VaultNameInvalid", "characters"),
    ("my vault", "VaultNameInvalid", "characters"),
    ("vaultä", "VaultNameInvalid", "characters"),
    ("ヴォールト", "VaultNameInvalid", "first_character"),
    ("vault.backup", "VaultNameInvalid", "characters"),
]


@pytest.mark.parametrize(("name", "code", "rule"), INVALID_NAMES)
def test_an_invalid_vault_name_gives_its_code_and_stores_nothing(
    client: Client, name: str, code: str, rule: str
) -> None:
    before = event_count(client)
    with pytest.raises(OrchestratorError) as caught:
        client.create_vault(name, "japaneast", "rg")
    assert (caught.value.code, caught.value.field) == (code, "name")
    assert caught.value.details[0]["rule"] == rule
    assert event_count(client) == before


def test_a_vault_name_is_unique_in_its_subscription_ignoring_case(client: Client) -> None:
    client.create_vault("Vault-A", "japaneast", "rg")
    before = event_count(client)
    with pytest.raises(OrchestratorError) as caught:
        client.create_vault("vault-a", "japaneast", "rg")
    assert caught.value.code == "VaultNameTaken"
    assert event_count(client) == before


def test_the_same_vault_name_is_fine_in_another_subscription(client: Client) -> None:
    first = client.create_vault("vault-a", "japaneast", "rg")
    second = client.create_vault("vault-a", "japaneast", "rg", subscription="other-sub")
    assert first != second


def test_names_of_2_and_50_characters_are_accepted(client: Client) -> None:
    client.create_vault("ab", "japaneast", "rg")
    client.create_vault("a" + "-9" * 24 + "z", "japaneast", "rg")
    assert {v.name for v in client.vaults()} == {"ab", "a" + "-9" * 24 + "z"}


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("region", "Japan East", "RegionInvalid"),
        ("resource_group", "rg/x", "ResourceGroupInvalid"),
        ("subscription", " ", "SubscriptionInvalid"),
        ("kind", "premium", "CommandInvalid"),
        ("replication", "zone", "CommandInvalid"),
    ],
)
def test_other_bad_vault_fields_are_named_and_store_nothing(client: Client, field: str, value: str, code: str) -> None:
    values = {"name": "vault-x", "region": "japaneast", "resource_group": "rg", field: value}
    before = event_count(client)
    with pytest.raises(OrchestratorError) as caught:
        client.create_vault(**values)
    assert caught.value.code == code and caught.value.field == field
    assert event_count(client) == before


def test_a_new_vault_is_geo_redundant_with_the_vm_backup_goal(client: Client) -> None:
    vault_id = client.create_vault("vault-a", "japaneast", "rg")
    [row] = client.vaults()
    assert (row.vault_id, row.replication, row.kind, row.backup_goal) == (
        vault_id,
        "geo",
        "recovery_services",
        "azure/virtual_machine",
    )
    assert row.created_by == "alice@example.com"


def test_replication_can_be_set_to_local_and_back(client: Client) -> None:
    vault_id = client.create_vault("vault-a", "japaneast", "rg")
    client.set_replication(vault_id, "local")
    assert client.vaults()[0].replication == "local"
    client.set_replication(vault_id, "geo")
    assert client.vaults()[0].replication == "geo"


def test_setting_the_same_replication_stores_nothing(client: Client) -> None:
    vault_id = client.create_vault("vault-a", "japaneast", "rg")
    before = event_count(client)
    client.set_replication(vault_id, "geo")
    assert event_count(client) == before


def test_a_classic_backup_vault_has_no_vm_backup_goal(client: Client) -> None:
    client.create_vault("classic", "japaneast", "rg", kind="backup_vault")
    row = client.vaults()[0]
    assert (row.kind, row.backup_goal) == ("backup_vault", "")


def test_an_unknown_vault_id_is_not_found(client: Client) -> None:
    with pytest.raises(OrchestratorError) as caught:
        client.discover("00000000-0000-0000-0000-000000000000")
    assert caught.value.code == "VaultNotFound"
    with pytest.raises(OrchestratorError) as caught:
        client.discover("not-an-id")
    assert caught.value.code == "CommandInvalid" and caught.value.field == "vault_id"


def test_what_a_vault_was_created_as_is_read_from_its_first_event_alone(client: Client, discovered_vault: str) -> None:
    """Workers' prechecks read a vault's kind and region this way: one event, however long the
    vault's history (its inventory and edits after it)."""
    client.set_replication(discovered_vault, "local")
    app = client._runtime.app
    reads: list[dict[str, object]] = []
    select_events = app.recorder.select_events

    def counted(*args: object, **kwargs: object) -> object:
        reads.append(kwargs)
        return select_events(*args, **kwargs)  # type: ignore[arg-type]

    app.recorder.select_events = counted  # type: ignore[method-assign]
    try:
        created = app.vault_created(UUID(discovered_vault))
    finally:
        del app.recorder.select_events
    assert (created.kind.value, created.region, created.name) == ("recovery_services", "japaneast", "vault-east")
    assert [r.get("lte") for r in reads] == [1]
    whole = app.get(UUID(discovered_vault), Vault)
    assert whole.version > 2 and (whole.kind, whole.region) == (created.kind, created.region)


def test_a_vault_creation_is_not_found_for_an_unknown_id_or_another_aggregate(
    client: Client, discovered_vault: str
) -> None:
    app = client._runtime.app
    job_id = UUID(client.discover(discovered_vault))
    client.wait(str(job_id))
    for missing in (uuid4(), job_id):
        with pytest.raises(OrchestratorError) as caught:
            app.vault_created(missing)
        assert caught.value.code == "VaultNotFound"
