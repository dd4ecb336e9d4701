"""`vault check`: a vault store's integrity, read without changing anything."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workers import vaultusage
from workers.manifests import read_references

if TYPE_CHECKING:
    from workers.vaultstore import VaultStore


def check(store: VaultStore) -> dict[str, Any]:
    """Every manifest readable (`bad_manifests`: the file and what is wrong) and its blocks there
    (`missing`) and hashing right (`corrupt`): `clean` when nothing of that is found. Also the blocks
    no manifest references (`orphans`), temporary files, the block files' measured size
    (`stored_bytes`) and the usage record as last written."""
    references = read_references(store.manifest_ids(), store.read_manifest_bytes)
    missing: list[dict[str, str]] = []
    corrupt: list[dict[str, str]] = []
    verdicts: dict[str, str] = {}  # each block read once, however many manifests list it
    for rp_id, manifest in references.manifests.items():
        for digest in sorted(manifest.block_digests):
            if digest not in verdicts:
                verdicts[digest] = block_verdict(store, digest)
            if verdicts[digest] != "ok":
                (missing if verdicts[digest] == "missing" else corrupt).append(
                    {"recovery_point": rp_id, "block": digest}
                )
    blocks = store.block_files()
    record = vaultusage.peek(store.root / "usage")
    return {
        "missing": missing,
        "corrupt": corrupt,
        "bad_manifests": [b.as_dict() for b in references.bad],
        "orphans": sorted(set(blocks) - references.live),
        "temporary_files": sorted(str(p.relative_to(store.root)) for p in store.temporary_files()),
        "stored_bytes": sum(blocks.values()),
        "usage_record": None if record is None else {"sequence": record[0], "bytes": record[1]},
        "clean": not missing and not corrupt and not references.bad,
    }


def block_verdict(store: VaultStore, digest: str) -> str:
    """ "ok", "missing" or "corrupt": the block read whole and hashed."""
    if not store.has_block(digest):
        return "missing"
    try:
        store.get_block(digest)
    except (OSError, ValueError):
        return "corrupt"
    return "ok"
