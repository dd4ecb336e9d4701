"""Runs the read-model projections: in a thread (embedded) or as the `projections` service."""

from __future__ import annotations

from typing import Any

from projections.audit_index import AuditIndexFollower
from projections.base import Projection, ProjectionGroup
from projections.chain import ChainFollower
from projections.dashboard import DashboardProjection
from projections.follower import Follower, FollowerThread
from projections.guards import GuardsProjection
from projections.items import ItemsProjection
from projections.jobs import JobsProjection
from projections.policies import PoliciesProjection
from projections.recovery_points import RecoveryPointsProjection
from projections.store import ReadStore
from projections.vaults import VaultsProjection
from projections.witness import Witness

PROJECTIONS: tuple[type[Projection], ...] = (
    JobsProjection,
    ItemsProjection,
    VaultsProjection,
    RecoveryPointsProjection,
    PoliciesProjection,
    DashboardProjection,
    GuardsProjection,
)
NAMES = [p.name for p in PROJECTIONS]  # as projections/names.py lists them (a test holds the two together)


def ensure_schemas(store: ReadStore) -> None:
    """Create (or rebuild, after a version change) every read model's tables."""
    for cls in PROJECTIONS:
        cls.ensure_schema(store)


def build_projections(app: Any, store: ReadStore) -> list[Projection]:
    return [cls(app, store) for cls in PROJECTIONS]


def projection_thread(
    app: Any, store: ReadStore, poll_interval: float, witness: Witness | None = None
) -> FollowerThread:
    """The read models and the audit hash chain (with its witness, when there is one), followed in turn."""
    followers: list[Follower] = [
        ProjectionGroup(app, store, build_projections(app, store)),
        ChainFollower(app, store, witness),
        AuditIndexFollower(app, store),
    ]
    return FollowerThread(followers, poll_interval, name="projections")
