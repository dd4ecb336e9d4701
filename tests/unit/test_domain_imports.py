"""The domain stands alone (issue 15, point 6): importing it loads the event library, pydantic and
the domain's own leaf modules, and nothing of the queue, the stores, the workers or the read models."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
DOMAIN = ROOT / "orchestrator" / "domain"
FORBIDDEN = {"rq", "redis", "fakeredis", "psycopg", "psycopg_pool", "workers", "projections", "typer", "yaml"}
ALLOWED_OURS = {"orchestrator", "orchestrator.errors"}  # and orchestrator.domain.*


def test_importing_the_domain_loads_no_queue_store_worker_or_read_model_module() -> None:
    code = (
        "import json, sys\nimport orchestrator.domain as d\n[getattr(d, name) for name in d.__all__]\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = json.loads(done.stdout)
    assert "orchestrator.domain.vault" in loaded  # it did import the domain
    assert sorted(m for m in loaded if m.split(".")[0] in FORBIDDEN) == []
    ours = {m for m in loaded if m.split(".")[0] == "orchestrator"}
    assert sorted(m for m in ours - ALLOWED_OURS if not m.startswith("orchestrator.domain")) == []


def test_the_naming_rules_load_no_aggregate() -> None:
    """The aggregates load when first asked for: the settings and a read command need the names and
    ids alone (orchestrator/config.py, orchestrator/entry/reader.py), not every event class."""
    code = "import json, sys\nimport orchestrator.domain.names\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = json.loads(done.stdout)
    assert sorted(m for m in loaded if m.startswith("orchestrator.domain.") and m != "orchestrator.domain.names") == []


def test_the_domains_modules_import_only_the_domain_its_errors_and_the_two_libraries() -> None:
    """Also what they import only for type checking: the domain's source names nothing else of ours."""
    imported: dict[str, set[str]] = {}
    for path in sorted(DOMAIN.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.setdefault(path.name, set()).add(node.module)
            elif isinstance(node, ast.Import):
                imported.setdefault(path.name, set()).update(alias.name for alias in node.names)
    libraries = {"eventsourcing", "pydantic", "pydantic_core"}
    outside = {
        name: sorted(
            m
            for m in modules
            if m.split(".")[0] not in libraries | set(sys.stdlib_module_names)
            and m != "orchestrator.errors"
            and not m.startswith("orchestrator.domain")
        )
        for name, modules in imported.items()
    }
    assert {name: modules for name, modules in outside.items() if modules} == {}
