"""Every public client method and every CLI command, called with arbitrary arguments (hypothesis):
nothing raises but an `OrchestratorError` with a code, and a refused call stores nothing (issue 14,
finding 20). The examples are bounded so the test runs in CI."""

from __future__ import annotations

import inspect
import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from typer.testing import CliRunner

from orchestrator import Client, OrchestratorError
from orchestrator.entry.cli.main import app
from tests.helpers import event_count

EXCLUDED = {"close"}  # ends the client the test goes on with
METHODS = sorted(
    name
    for name, member in inspect.getmembers(Client, inspect.isfunction)
    if not name.startswith("_") and name not in EXCLUDED
)
# Bounded for CI; FUZZ_EXAMPLES=<n> runs more, with new random examples each time.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=EXAMPLES or 150,
    deadline=None,
    derandomize=not EXAMPLES,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
CLI_FUZZ = settings(FUZZ, max_examples=EXAMPLES or 60)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, dict[str, list[Any]], Path]]:
    """A client with a vault, a policy, registered and protected VMs and a backup, its workers then
    stopped (so nothing is written in the background: a refused call's event count is exact), and
    the values that reach past the first checks."""
    from tests.helpers import fabric_with

    tmp = tmp_path_factory.mktemp("fuzz")
    client = Client(data_dir=tmp / "data", fabric=fabric_with(tmp, healthy=3), principal="ops", scheduler_interval=3600)
    try:
        vault = client.create_vault("vault-east", "japaneast", "rg")
        client.wait(client.discover(vault))
        client.wait_all(client.register(vault, ["vm01", "vm02"]))
        client.wait_all(client.protect(vault, ["vm01"]))
        backup = client.wait(client.backup_now(vault, "vm01"))
        client._runtime.close_workers()
        known: dict[str, list[Any]] = {
            "id": [vault, backup.job_id, backup.result["recovery_point_id"], "6f1d1f5e-0000-4000-8000-000000000000"],
            "name": [
                "vm01",
                "vm02",
                "vault-east",
                "DefaultPolicy",
                "japaneast",
                "rg",
                "default",
                "vm01-copy",
                "shop-cs/shop",
                "disks",
                "vm",
                "backup",
                "register",
                "geo",
                "local",
                "backup_vault",
                "failed",
            ],
            "path": [str(tmp / "out"), "relative/out", "/", "/proc", str(tmp / "data")],
            "value": [
                {"frequency": "daily", "times": ["01:00"]},
                {"daily": {"days": 30}},
                ["vm01"],
                ("vm01", "vm02"),
                (1, "0" * 64),
                datetime(2026, 1, 1, tzinfo=UTC),
                30,
                True,
            ],
        }
        yield client, known, tmp
    finally:
        client.close()


def _typed(hint: Any, known: dict[str, list[Any]]) -> st.SearchStrategy[Any]:
    """Values of the parameter's own type, with contents that are sometimes right and mostly not:
    what reaches past the type check to the rules behind it."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Annotated:
        return _typed(args[0], known)
    if origin in (Union, UnionType):
        return st.one_of(*(_typed(a, known) for a in args))
    if hint is type(None):
        return st.none()
    if hint is str:
        return st.one_of(
            st.sampled_from(known["name"] + known["id"]),
            st.text(max_size=12).filter(_relative),
            st.sampled_from(known["path"]),
        )
    if hint is bool:
        return st.booleans()
    if hint in (int, float):
        return st.one_of(st.integers(-5, 10**6), st.floats(-1, 0.3)) if hint is float else st.integers(-5, 10**6)
    if hint is datetime or getattr(hint, "__name__", "") == "AwareDatetime":
        return st.one_of(st.datetimes(timezones=st.just(UTC)), st.datetimes())
    if hint is Path:
        return st.sampled_from([Path(p) for p in known["path"]])
    if origin in (list, Sequence) or hint is Sequence:
        return st.lists(_typed(args[0] if args else str, known), max_size=3)
    if origin is tuple:
        return st.tuples(*(_typed(a, known) for a in args if a is not Ellipsis))
    if origin is dict or (isinstance(hint, type) and issubclass(hint, BaseModel)):
        return st.one_of(
            st.sampled_from([v for v in known["value"] if isinstance(v, dict)]),
            st.dictionaries(
                st.sampled_from(
                    ["frequency", "times", "weekdays", "daily", "weekly", "days", "weeks", "monthly", "on"]
                ),
                st.one_of(_junk(known), st.dictionaries(st.text(max_size=6), _junk(known), max_size=2)),
                max_size=3,
            ),
        )
    if origin is not None and "Callable" in str(origin):
        return st.just(lambda *_: None)
    return _junk(known)


def _relative(text: str) -> bool:
    return not text.startswith("/")  # no writes outside the test's directory


def _junk(known: dict[str, list[Any]]) -> st.SearchStrategy[Any]:
    text = st.text(max_size=40).filter(_relative)
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=True),
        text,
        st.binary(max_size=8),
        st.datetimes(),
        st.datetimes(timezones=st.just(UTC)),
    )
    return st.one_of(
        scalars,
        st.lists(scalars, max_size=3),
        st.dictionaries(text, scalars, max_size=2),
        st.tuples(scalars, scalars),
        *(st.sampled_from(v) for v in known.values()),
    )


def _arguments(method: str, known: dict[str, list[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Every parameter of its own type (ids for `..._id`), but at most one of any value at all."""
    function = getattr(Client, method)
    hints = get_type_hints(function, include_extras=True)
    parameters = [
        p
        for p in inspect.signature(function).parameters.values()
        if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]

    def typed(p: inspect.Parameter) -> st.SearchStrategy[Any]:
        if p.name.endswith("_id") or p.name.endswith("_ids"):
            ids = st.sampled_from(known["id"])
            value: st.SearchStrategy[Any] = st.lists(ids, max_size=3) if p.name.endswith("_ids") else ids
        else:
            value = _typed(hints.get(p.name, Any), known)
        if p.name == "timeout":  # a job that never ends (the workers are stopped) is waited on briefly
            value = st.floats(max_value=0.3)
        return value if p.default is inspect.Parameter.empty else st.one_of(st.just(p.default), value)

    @st.composite
    def arguments(draw: st.DrawFn) -> dict[str, Any]:
        wild = draw(st.sampled_from([None, *(p.name for p in parameters)]))
        return {p.name: draw(_junk(known) if p.name == wild and p.name != "timeout" else typed(p)) for p in parameters}

    return arguments()


@st.composite
def calls(draw: st.DrawFn, known: dict[str, list[Any]]) -> tuple[str, dict[str, Any]]:
    method = draw(st.sampled_from(METHODS))
    return method, draw(_arguments(method, known))


def test_finding_20_every_client_method_with_arbitrary_arguments(
    world: tuple[Client, dict[str, list[Any]], Path],
) -> None:
    client, known, _ = world

    @FUZZ
    @given(calls(known))
    def call(drawn: tuple[str, dict[str, Any]]) -> None:
        method, arguments = drawn
        before = event_count(client)
        try:
            outcome = getattr(client, method)(**arguments)
        except OrchestratorError as exc:
            assert exc.code and exc.code[0].isupper(), (method, arguments, exc)
            assert event_count(client) == before, (method, arguments, exc)  # a refusal stores nothing
            return
        if hasattr(outcome, "close") and hasattr(outcome, "when"):  # as_of's scratch store
            outcome.close()

    call()


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    found: list[tuple[tuple[str, ...], Any]] = []
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a group
            found += _commands(command, (*path, name))
        else:
            found.append(((*path, name), command))
    return found


def _cli_commands() -> list[tuple[tuple[str, ...], list[str]]]:
    root = typer.main.get_command(app)
    long_running = {("demo",), ("server",), ("serve", "dispatcher"), ("serve", "projections"), ("serve", "scheduler")}
    return [
        (path, [opt for param in command.params for opt in getattr(param, "opts", [])])
        for path, command in _commands(root)
        if path not in long_running
    ]


CLI = _cli_commands()


def _operator_events(db: Path) -> int:
    """Events the CLI's operator caused (workers finishing earlier jobs write as worker:ops)."""
    if not db.exists():
        return 0
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT state FROM stored_events").fetchall()
    return sum(json.loads(bytes(state)).get("principal") == "ops" for (state,) in rows)


def test_finding_20_every_cli_command_with_arbitrary_arguments(
    world: tuple[Client, dict[str, list[Any]], Path], tmp_path: Path, fabric: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, known, _ = world
    monkeypatch.chdir(tmp_path)  # relative paths (exports, fabric init) land here
    env = {
        "BACKUP_DATA_DIR": str(tmp_path / "data"),
        "BACKUP_FABRIC": str(fabric),
        "BACKUP_PRINCIPAL": "ops",
        "BACKUP_SCHEDULER_INTERVAL": "3600",
        "COLUMNS": "200",
    }
    runner = CliRunner()
    assert (
        runner.invoke(app, ["vault", "create", "vault-east", "--region", "japaneast", "-g", "rg"], env=env).exit_code
        == 0
    )
    words = st.one_of(
        st.text(max_size=20).filter(lambda t: not t.startswith("/")),
        st.sampled_from(
            [str(v) for v in known["name"] + known["id"]]
            + ["--json", "-v", "--vault", "vault-east", "2026-11-21T09:00", "7", "-1", "nan", str(tmp_path / "out")]
        ),
    )

    @CLI_FUZZ
    @given(
        st.sampled_from(CLI).flatmap(
            lambda c: st.tuples(
                st.just(c[0]), st.lists(st.one_of(words, st.sampled_from(c[1] or ["--json"])), max_size=6)
            )
        )
    )
    def invoke(drawn: tuple[tuple[str, ...], list[str]]) -> None:
        path, args = drawn
        if "--watch" in args:
            args = [a for a in args if a != "--watch"]
        before = _operator_events(tmp_path / "data" / "events.sqlite")
        result = runner.invoke(app, [*path, *args], env=env)
        assert result.exception is None or isinstance(result.exception, SystemExit), (path, args, result.output)
        assert result.exit_code in (0, 1, 2), (path, args, result.output)
        if result.exit_code == 2:
            assert "error [" in result.output or "Usage:" in result.output, (path, args, result.output)
            assert _operator_events(tmp_path / "data" / "events.sqlite") == before, (path, args, result.output)

    invoke()
