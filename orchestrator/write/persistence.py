"""How our pydantic events are stored: JSON state, topics from the classes' explicit TOPIC, and the
library's class versions: an event class with `class_version = N` (N > 1) is stored with
`"class_version": N` in its state, and a state stored by an older version is passed through the
class's static `upcast_v1_v2`, `upcast_v2_v3`... before it is validated (as the library's own
`Mapper` does)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast
from uuid import UUID

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Mapper, StoredEvent, Transcoder
from eventsourcing.utils import get_topic, resolve_topic
from pydantic import BaseModel

from orchestrator.write import sealing

Decode = Callable[[str, bytes], DomainEventProtocol[Any]]
_TOPICS: dict[str, Any] = {}  # stored topic -> event class: resolving one costs more than decoding an event


class JsonTranscoder(Transcoder):
    def encode(self, obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode("utf-8")

    def decode(self, data: bytes) -> Any:
        return json.loads(data)


def event_class(topic: str) -> Any:
    return _TOPICS.get(topic) or _TOPICS.setdefault(topic, resolve_topic(topic))


def upcast(cls: Any, state: dict[str, Any]) -> dict[str, Any]:
    """`state` as stored, brought up to `cls`'s class version (in place), its version key removed."""
    from_version, class_version = state.pop("class_version", 1), getattr(cls, "class_version", 1)
    while from_version < class_version:
        getattr(cls, f"upcast_v{from_version}_v{from_version + 1}")(state)
        from_version += 1
    return state


class PydanticMapper(Mapper[UUID]):
    """Stores `model_dump(mode="json")`; pydantic re-validates the state on the way back. With an
    audit key (`audit_key`, set by the application) every event is sealed (orchestrator/write/sealing.py)."""

    audit_key: bytes | None = None

    def to_stored_event(self, domain_event: DomainEventProtocol[Any]) -> StoredEvent:
        state = cast(BaseModel, domain_event).model_dump(mode="json")
        class_version = getattr(type(domain_event), "class_version", 1)
        if class_version > 1:
            state["class_version"] = class_version
        data = self.transcoder.encode(state)
        topic = get_topic(type(domain_event))
        if self.audit_key is not None:
            data = sealing.seal(
                self.audit_key, domain_event.originator_id, domain_event.originator_version, topic, data
            )
        if self.compressor:
            data = self.compressor.compress(data)
        if self.cipher:
            data = self.cipher.encrypt(data)
        return StoredEvent(
            originator_id=domain_event.originator_id,
            originator_version=domain_event.originator_version,
            topic=topic,
            state=data,
        )

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[Any]:
        return self.decode(stored_event.topic, stored_event.state)

    def decode(self, topic: str, data: bytes) -> DomainEventProtocol[Any]:
        """The event stored as `data` under `topic` (the state holds every field, the originator's
        id and version too, so a reader needs no more of the stored row)."""
        return _decode_plain(self.transcoder, event_class(topic), sealing.unsealed(self.plain(data)))

    def plain(self, data: bytes) -> bytes:
        """A stored state decrypted and decompressed: its JSON, sealed or not."""
        if self.cipher:
            data = self.cipher.decrypt(data)
        if self.compressor:
            data = self.compressor.decompress(data)
        return data

    def seal_of(self, originator_id: UUID | str, version: int, topic: str, data: bytes) -> sealing.Seal:
        """Whether a stored state carries this event's seal by the audit key (which must be set)."""
        assert self.audit_key is not None
        try:
            plain = self.plain(data)
        except Exception:  # not our cipher's, or not compressed: no seal of ours either
            return sealing.Seal.MISSING
        return sealing.check(self.audit_key, originator_id, version, topic, plain)

    def decoder(self) -> Decode:
        """`decode` for reading many events: with plain JSON state (no cipher, no compressor), an
        event of a class never versioned costs one call into pydantic-core (parse and validate)."""
        if self.cipher or self.compressor or not isinstance(self.transcoder, JsonTranscoder):
            return self.decode
        transcoder = self.transcoder

        def decode(topic: str, data: bytes) -> DomainEventProtocol[Any]:
            return _decode_plain(transcoder, event_class(topic), sealing.unsealed(data))

        return decode


def _decode_plain(transcoder: Transcoder, cls: Any, data: bytes) -> DomainEventProtocol[Any]:
    if isinstance(transcoder, JsonTranscoder) and getattr(cls, "class_version", 1) == 1:
        return cast(DomainEventProtocol[Any], cls.model_validate_json(data))  # parse and validate in one pass
    return cast(DomainEventProtocol[Any], cls.model_validate(upcast(cls, transcoder.decode(data))))
