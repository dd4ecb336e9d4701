"""The read models' names (their followers' names in the read store's positions) and the version of
each one's tables: here, light to import, so that a read command can tell whether the stored read
models are current without loading a projection (orchestrator/entry/reader.py). Bump a version when
its tables change: the view is rebuilt from the whole history. projections/runner.py holds the
projections themselves, in this order."""

VERSIONS = {
    "jobs": 4,  # 2: created_seq; 3: progress in bytes; 4: check results
    "items": 4,  # 2: protection and backup columns; 3: check results; 4: soft delete's purge time
    "vaults": 2,  # 2: deletion protection and the resource guard
    "recovery_points": 3,  # 2: key_vault; 3: the last verify
    "policies": 3,
    "dashboard": 2,  # dash_usage: the vault stores' usage reports
    "guards": 1,
}
NAMES = tuple(VERSIONS)
