"""The audit trail anchored outside the database (issue 16, part 7), tampered with on SQLite and on
PostgreSQL alike by someone who can write both databases but holds neither the audit key nor the
witness. Each scenario returns the findings `audit verify` gave; the test files say what they must be."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

from orchestrator import Client
from orchestrator.audit.verify import Report
from orchestrator.write import sealing
from projections.witness import Witness
from tests.tampering import Sql, stored_id, tamper


@dataclass
class Deployment:
    """How a scenario reaches one deployment: a client maker (`**settings` added), raw SQL on its
    event store and its read store, and the names there."""

    client: Callable[..., Client]
    events: Sql
    read: Sql
    events_table: str
    id_column: str  # rowid on SQLite, notification_id on PostgreSQL
    chain_table: str
    positions_table: str
    witness: Path
    key: str
    snapshot: Callable[[], None]  # copy both databases aside (the service stopped)
    restore: Callable[[], None]  # put that copy back


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def anchored(d: Deployment, **extra: Any) -> Client:
    return d.client(audit_key=d.key, audit_witness=d.witness, **extra)


def history(client: Client, vms: int = 20) -> int:
    """A vault with `vms` VMs discovered and registered (about seven events a VM), chained; returns
    the last position."""
    vault = client.create_vault("vault-audit", "japaneast", "rg")
    client.wait(client.discover(vault))
    client.wait_all(client.register(vault, [f"vm{i:02d}" for i in range(1, vms + 1)]))
    head = client._runtime.app.recorder.max_notification_id() or 0
    assert client._runtime.store.wait(["audit_chain"], head, 60)
    return head


def heads(d: Deployment) -> list[int]:
    return [h.position for h in Witness(d.witness, base64.b64decode(d.key)).read().heads]


def witnessed(d: Deployment, position: int, timeout: float = 30.0) -> None:
    """Wait for a witness head at or after `position`."""
    deadline = time.monotonic() + timeout
    while max(heads(d), default=0) < position:
        assert time.monotonic() < deadline, f"no witness head reached {position}: {heads(d)}"
        time.sleep(0.05)


def verified(d: Deployment) -> Report:
    """`audit verify` as an operator runs it: no services, the key and the witness given."""
    with anchored(d, start_services=False) as client:
        return client.audit_verify(chain_only=True)


def built(d: Deployment) -> int:
    """A clean anchored history with at least two witness heads; returns its last position."""
    with anchored(d) as client:
        head = history(client)
        witnessed(d, head - 99)
    report = verified(d)
    assert report.clean and report.authenticated == report.checked, [f.describe() for f in report.findings]
    assert report.witness_heads >= 2
    return head


def chain_emptied(d: Deployment) -> Report:
    """The chain table emptied and the chain follower's position set back to nothing: only the
    witness still knows how far the chain had reached."""
    built(d)
    d.read(f"DELETE FROM {d.chain_table}", ())
    d.read(f"DELETE FROM {d.positions_table} WHERE follower = 'audit_chain'", ())
    return verified(d)


def chain_truncated(d: Deployment) -> tuple[int, Report]:
    """The chain table cut after its first third, the follower's position set to match."""
    head = built(d)
    kept = head // 3
    d.read(f"DELETE FROM {d.chain_table} WHERE notification_id > ?", (kept,))
    d.read(f"UPDATE {d.positions_table} SET notification_id = ? WHERE follower = 'audit_chain'", (kept,))
    return kept, verified(d)


def insert_unsealed(d: Deployment, topic: str, state: bytes, copy_seal: bool = False) -> int:
    """Store `state`'s event again under a new originator (version 1), as SQL can: without a seal, or
    with the seal of the event it copies. Returns its notification id."""
    new = uuid4()
    data = json.loads(sealing.unsealed(state))
    data.update(originator_id=str(new), originator_version=1)
    forged = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    if copy_seal:
        forged = state[: sealing.HEADER] + forged
    d.events(
        f"INSERT INTO {d.events_table} (originator_id, originator_version, topic, state) VALUES (?, ?, ?, ?)",
        (stored_id(new, d.id_column), 1, topic, forged),
    )
    [(last,)] = d.events(f"SELECT MAX({d.id_column}) FROM {d.events_table}", ())
    return int(last)


def forged_appended(d: Deployment, sealed_as: str) -> tuple[int, Report]:
    """An event appended by SQL: another event's state under a new originator, with no seal
    (`sealed_as` "none") or with a seal copied from the event it imitates ("copied")."""
    head = built(d)
    [(topic, state)] = d.events(f"SELECT topic, state FROM {d.events_table} WHERE {d.id_column} = ?", (head // 2,))
    return insert_unsealed(d, topic, bytes(state), copy_seal=sealed_as == "copied"), verified(d)


def rebuilt_over(d: Deployment, kind: str) -> tuple[list[int], Report]:
    """An event tampered with (`kind`: modified, deleted, inserted, reordered) and the chain rebuilt
    over the changed history by the product itself run without the key: the chain table agrees with
    the events again, and only the seals and the witness can tell."""
    head = built(d)
    expected = tamper(kind, d.events, d.events_table, d.id_column, head // 2)
    index_table = d.chain_table.replace("audit_chain", "audit_index")
    for table in (d.chain_table, index_table, index_table.replace("audit_index", "audit_owners")):
        d.read(f"DELETE FROM {table}", ())  # the audit index too, which would name the change otherwise
    d.read(f"DELETE FROM {d.positions_table} WHERE follower IN ('audit_chain', 'audit_index')", ())
    with d.client() as rebuilder:  # no audit key, no witness
        end = rebuilder._runtime.app.recorder.max_notification_id() or 0
        assert rebuilder._runtime.store.wait(["audit_chain", "audit_index"], end, 60)
        assert rebuilder.audit_verify(chain_only=True).clean  # the chain alone sees nothing wrong
    return expected, verified(d)


def rolled_back(d: Deployment) -> tuple[int, Report]:
    """Both databases copied aside, the service run on for more events and heads, then the copy put
    back: the history ends before what the witness saw."""
    head = built(d)
    d.snapshot()
    with anchored(d) as client:
        for n in range(110):  # an event each
            client.create_vault(f"later-{n}", "japaneast", "rg")
        later = client._runtime.app.recorder.max_notification_id() or 0
        witnessed(d, later - 99)
    assert max(heads(d)) > head
    d.restore()
    return max(heads(d)), verified(d)
