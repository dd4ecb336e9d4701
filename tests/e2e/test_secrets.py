"""Secrets stay secret (issue 16, part 8): API tokens, the audit key, the event cipher key and the key
protection key never appear in the events, the logs, the read models, the witness, the API's
responses (but the one that makes a token, which shows it that once) or an error's message."""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import sqlite3
from pathlib import Path

import httpx
import pytest

from orchestrator import Client, OrchestratorError
from orchestrator.domain.identity import parse_token
from tests.helpers import fabric_with, serving


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def _forms(secret: str) -> list[str]:
    """A secret as text, and a base64 key's bytes as hex too."""
    try:
        return [secret, base64.b64decode(secret, validate=True).hex()]
    except ValueError:
        return [secret]


def test_no_secret_is_logged_stored_or_answered(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    keys = {"key_protection_key": _key(), "event_cipher_key": _key(), "audit_key": _key()}
    witness = tmp_path / "witness"
    data = tmp_path / "data"
    local = Client(
        data_dir=data, fabric=fabric_with(tmp_path, healthy=2), scheduler_interval=3600, audit_witness=witness, **keys
    )
    owner = local.create_identity("admin", "owner")
    stack = contextlib.ExitStack()
    stack.callback(local.close)
    url = stack.enter_context(serving(local, log_level="debug"))
    answers: list[str] = []
    tokens = [owner]

    def call(method: str, token: str | None, **body: object) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = httpx.post(f"{url}/v1/{method}", json=body, headers=headers, timeout=60)
        if method != "create_identity":
            answers.append(response.text)
        return response

    try:
        vault = call("create_vault", owner, name="vault-east", region="japaneast", resource_group="rg").json()
        call("wait", owner, job_id=call("discover", owner, vault_id=vault).json())
        call("wait_all", owner, job_ids=call("register", owner, vault_id=vault, vm_names=["vm01"]).json())
        call("wait_all", owner, job_ids=call("protect", owner, vault_id=vault, vm_names=["vm01"]).json())
        call("wait", owner, job_id=call("backup_now", owner, vault_id=vault, vm_name="vm01").json())
        made = call("create_identity", owner, name="bob", role="operator")
        tokens.append(made.json())
        call("vaults", tokens[1])
        call("identities", owner)
        call("revoke_identity", owner, name="bob")
        call("vaults", tokens[1])  # revoked: 401
        call("vaults", tokens[1][:-3] + "xyz")  # a wrong one: 401
        call("vaults", None)
        call("create_identity", owner, name="mallory", role="guard_admin")  # refused: 403
        call("set_replication", owner, vault_id=vault, replication="local", principal=owner)  # 422
        call("history", owner)
        call("audit_verify", owner, chain_only=True)
        call("jobs", owner)
        call("protected_items", owner, vault_id=vault)
        answers.append(httpx.get(f"{url}/openapi.json").text)
        assert local._runtime.store.wait(["audit_chain"], local._runtime.app.recorder.max_notification_id() or 0, 30)
    finally:
        stack.close()
    for setting, value in (("audit_key", "not-base64!"), ("event_cipher_key", keys["audit_key"][:-4] + "====")):
        with pytest.raises(OrchestratorError) as caught:
            Client(data_dir=data, **{setting: value})
        answers.append(caught.value.message)

    with sqlite3.connect(data / "readmodels.sqlite") as con:
        read_models = "\n".join(con.iterdump())
    with Client(data_dir=data, start_services=False, **keys) as reader:
        history = "\n".join(e.model_dump_json() for e in reader.history())
    places = {
        "logs": caplog.text,
        "responses": "\n".join(answers),
        "read models": read_models,
        "events": history,
        "event store file": (data / "events.sqlite").read_bytes().decode("latin-1"),
        "witness": "\n".join(p.read_text() for p in witness.iterdir()),
    }
    # Each token, and its secret part alone (which may itself hold a "_": parsed as the service does).
    secrets = [*keys.values(), *tokens, *(parsed[1] for t in tokens if (parsed := parse_token(t)) is not None)]
    assert len(history) > 1000 and "backup.identity.created" in history and len(places["witness"]) > 100
    for where, text in places.items():
        for secret in secrets:
            for form in _forms(secret):
                assert form not in text, f"a secret is in the {where}"
