"""The README's settings table is the operator's reference: every setting the code reads is in it,
with the default the code has, and it names no setting the code does not read."""

from __future__ import annotations

import re
from pathlib import Path

from orchestrator.config import PREFIX, Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def _table() -> dict[str, str]:
    """variable -> its default cell, from the `## Settings` section's table."""
    section = README.read_text(encoding="utf-8").split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if not line.startswith("| `BACKUP_") or len(cells) < 3:
            continue
        # `BACKUP_POSTGRES_HOST` / `_PORT` / ... with defaults `a` / `b` / ...: one row for several.
        names = re.findall(r"`(_?[A-Z0-9_]+)`", cells[0])
        defaults = [d.strip() for d in cells[1].split(" / ")]
        base = names[0].rsplit("_", 1)[0]
        for i, name in enumerate(names):
            full = name if name.startswith(PREFIX) else base + name
            rows[full] = defaults[i] if len(defaults) == len(names) else cells[1]
    return rows


def test_every_setting_is_in_the_readme_and_none_else() -> None:
    assert set(_table()) == {PREFIX + name.upper() for name in Settings.model_fields}


def test_the_readme_gives_each_literal_default_the_code_has() -> None:
    table = _table()
    for name, field in Settings.model_fields.items():
        default = field.default
        if field.default_factory is not None or default is None:
            continue  # the README says what it stands for: unset, the OS user, a path in the data dir
        cell = table[PREFIX + name.upper()]
        if default == "":
            assert "`" not in cell, name  # "empty", or what empty means
            continue
        shown = str(int(default)) if isinstance(default, float) and default.is_integer() else str(default)
        assert cell == f"`{shown}`", name
