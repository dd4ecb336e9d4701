"""Collection: the blocks no manifest references and leftover temporary files go, under the vault's
exclusive lock, so never while a backup runs (a backup holds that lock shared for its whole run, and
may be counting on a block no manifest lists yet). Blocks are counted out of the usage record one
by one as they go, and the record is then measured again, exactly: nothing else changes blocks then.

A manifest that cannot be read could reference any block: while one is there no block is collected
(the reason is in the result); one that is JSON but not a manifest keeps every digest it mentions.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from workers.manifests import read_references

if TYPE_CHECKING:
    from workers.vaultstore import VaultStore

log = logging.getLogger(__name__)
BUSY = "a backup of the vault is running: collection waits for the next retention run"


def collect(store: VaultStore) -> dict[str, Any]:
    """What was removed: `blocks_removed`, `bytes_freed` (blocks only), `temporary_files_removed`
    and `temporary_bytes_removed` apart; `skipped` with its `reason` when no block was collected."""
    try:
        with store.exclusively():
            return _collect(store)
    except BlockingIOError:
        return {**_outcome(), "skipped": True, "reason": BUSY}


def _collect(store: VaultStore) -> dict[str, Any]:
    references = read_references(store.manifest_ids(), store.read_manifest_bytes)
    temporaries = store.temporary_files()
    for path in temporaries:
        path.unlink(missing_ok=True)
    swept = {"temporary_files_removed": len(temporaries), "temporary_bytes_removed": sum(temporaries.values())}
    if references.unreadable:
        return {
            **_outcome(),
            **swept,
            "skipped": True,
            "reason": (
                f"{references.unreadable[0].describe()}: it may reference any block, so no block is collected "
                "until it is repaired or removed"
            ),
        }
    unreferenced = [digest for digest in store.block_files() if digest not in references.live]
    freed = sum(store.remove_block(digest) for digest in unreferenced)
    store.remeasure()
    return {**_outcome(len(unreferenced), freed), **swept, "skipped": False, "reason": ""}


def remove_unclaimed(store: VaultStore, linked: set[str]) -> None:
    """After a backup that failed (or found another delivery's manifest there first): the blocks it
    linked that no manifest references go now, if no backup runs; otherwise collection takes them."""
    if not linked:
        return
    try:
        with store.exclusively():
            references = read_references(store.manifest_ids(), store.read_manifest_bytes)
            if references.unreadable:
                log.warning(
                    "%d block(s) left for collection in %s: %s",
                    len(linked),
                    store.root,
                    references.unreadable[0].describe(),
                )
                return
            for digest in sorted(linked - references.live):
                store.remove_block(digest)
    except BlockingIOError:
        log.info("%d block(s) left for collection in %s: a backup of the vault is running", len(linked), store.root)
    except OSError:
        log.exception("could not remove the %d block(s) a failed backup left in %s", len(linked), store.root)


def _outcome(removed: int = 0, freed: int = 0) -> dict[str, Any]:
    return {"blocks_removed": removed, "bytes_freed": freed, "temporary_files_removed": 0, "temporary_bytes_removed": 0}
