"""A job: one unit of work an operator can follow, from request to a final state."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from eventsourcing.domain import event

from orchestrator.domain.base import Aggregate
from orchestrator.domain.values import CheckResult, Finding, JobState, Operation
from orchestrator.errors import DomainError


class Job(Aggregate):
    TOPIC = "backup.job"

    class Created(Aggregate.Created):
        TOPIC = "backup.job.created"
        operation: Operation
        vault_id: UUID
        vm_key: str
        vm_name: str
        job_key: str = ""

    class Started(Aggregate.Event):
        TOPIC = "backup.job.started"
        worker: str

    class Completed(Aggregate.Event):
        TOPIC = "backup.job.completed"
        result: dict[str, Any]
        warnings: list[Finding]

    class Failed(Aggregate.Event):
        TOPIC = "backup.job.failed"
        error_code: str
        error_message: str

    # The events after which a job is over (its state terminal): what a waiting client watches for.
    ENDING_TOPICS: ClassVar[tuple[str, ...]] = (Completed.TOPIC, Failed.TOPIC)

    class ParametersSet(Aggregate.Event):
        TOPIC = "backup.job.parameters_set"
        parameters: dict[str, Any]

    class ChecksRecorded(Aggregate.Event):
        TOPIC = "backup.job.checks_recorded"
        stage: str
        results: list[CheckResult]

    class Progressed(Aggregate.Event):
        TOPIC = "backup.job.progressed"
        bytes_done: int
        bytes_total: int

    @staticmethod
    def create_id(job_key: str = "") -> UUID:
        """A job with a key (a scheduled slot, say) gets an id derived from it: a second request
        for the same key conflicts instead of making a second job."""
        return uuid5(NAMESPACE_URL, f"/jobs/{job_key}") if job_key else uuid4()

    @staticmethod
    def check_restore_target(mode: str, target_dir: str) -> None:
        """A restore of disks writes them into a directory the operator names."""
        if mode == "disks" and not target_dir:
            raise DomainError("TargetDirRequired", "restoring disks needs a target directory", field="target_dir")

    @event(Created)
    def __init__(self, operation: Operation, vault_id: UUID, vm_key: str, vm_name: str, job_key: str = "") -> None:
        self.operation = operation
        self.vault_id = vault_id
        self.vm_key = vm_key
        self.vm_name = vm_name
        self.state = JobState.IN_PROGRESS
        self.attempts = 0
        self.result: dict[str, Any] = {}
        self.warnings: list[Finding] = []
        self.error_code = ""
        self.error_message = ""
        self.bytes_done = 0
        self.bytes_total = 0
        self.parameters: dict[str, Any] = {}
        self.checks: list[CheckResult] = []

    @property
    def ended_on(self) -> datetime | None:
        """A final event is a job's last, so it ended when it was last modified."""
        return self.modified_on if self.state.is_terminal else None

    @event(Started)
    def start(self, worker: str) -> None:
        self.attempts += 1

    @event(ParametersSet)
    def set_parameters(self, parameters: dict[str, Any]) -> None:
        """What the worker needs beyond the job's VM (a restore's target, say)."""
        self.parameters = dict(parameters)

    @event(ChecksRecorded)
    def record_checks(self, stage: str, results: list[CheckResult]) -> None:
        self.checks = list(results)

    @event(Progressed)
    def progress(self, bytes_done: int, bytes_total: int) -> None:
        self.bytes_done = bytes_done
        self.bytes_total = bytes_total

    @event(Completed)
    def complete(self, result: dict[str, Any], warnings: list[Finding]) -> None:
        self.state = JobState.COMPLETED_WITH_WARNINGS if warnings else JobState.COMPLETED
        self.result = dict(result)
        self.warnings = list(warnings)

    @event(Failed)
    def fail(self, error_code: str, error_message: str) -> None:
        self.state = JobState.FAILED
        self.error_code = error_code
        self.error_message = error_message
