"""What TaskRouter has told a task's workflow: its events, deduplicated, and what follows from them.

Deterministic and free of I/O, like the workflow that holds it.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from flexsf.models import CarriedFacts, RecordRef, TaskEvent
    from flexsf.salesforce_ids import is_valid_id, object_type_for_id
    from flexsf.search_terms import SEARCH_ATTRIBUTE_ORDER
    from flexsf.vocabulary import FINISHED_EVENTS as FINISHED
    from flexsf.vocabulary import GONE_EVENTS as GONE
    from flexsf.vocabulary import RESERVATION_ACCEPTED as ACCEPTED


class TaskFacts:
    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.event_count = 0
        self.attributes: dict = {}
        self.attributes_at = -1
        self.channel: str | None = None
        self.accepted: TaskEvent | None = None
        self.finished: TaskEvent | None = None
        # Deleted (purged) before a completion reached us: the workflow should ask TaskRouter how it ended.
        self.gone = False

    def carry(self) -> CarriedFacts:
        """What the next run needs (continue-as-new); sorted, so the same facts always carry the same payload."""
        return CarriedFacts(
            seen=sorted(self.seen),
            event_count=self.event_count,
            attributes=self.attributes,
            attributes_at=self.attributes_at,
            channel=self.channel,
            # Their attributes are carried once, as `attributes`; the events keep what else they tell.
            accepted=self.accepted.model_copy(update={"task_attributes": {}}) if self.accepted else None,
            finished=self.finished.model_copy(update={"task_attributes": {}}) if self.finished else None,
        )

    @classmethod
    def carried(cls, carried: CarriedFacts) -> TaskFacts:
        facts = cls()
        facts.seen = set(carried.seen)
        facts.event_count = carried.event_count
        facts.attributes = carried.attributes
        facts.attributes_at = carried.attributes_at
        facts.channel = carried.channel
        facts.accepted = carried.accepted
        facts.finished = carried.finished
        return facts

    def apply(self, event: TaskEvent) -> None:
        """Record one event; a Sid seen before changes nothing, whatever order events arrive in."""
        if event.sid in self.seen:
            return
        self.seen.add(event.sid)
        self.event_count += 1
        if event.task_attributes and event.timestamp_ms >= self.attributes_at:
            # Events may arrive out of order: the newest attributes win.
            self.attributes = event.task_attributes
            self.attributes_at = event.timestamp_ms
        self.channel = event.task_channel or self.channel
        if event.event_type == ACCEPTED and self.accepted is None:
            self.accepted = event
        elif event.event_type in FINISHED and self.finished is None:
            self.finished = event
        elif event.event_type in GONE and self.finished is None:
            self.gone = True

    @property
    def outcome(self) -> str | None:
        return FINISHED.get(self.finished.event_type) if self.finished else None

    @property
    def worker_sid(self) -> str | None:
        return self.accepted.worker_sid if self.accepted else None

    def direction(self) -> str:
        return "Outbound" if str(self.attributes.get("direction", "")).lower() == "outbound" else "Inbound"

    def channel_name(self) -> str:
        channel = self.channel or self.attributes.get("channelType") or "voice"
        return "chat" if channel == "web" else channel

    def record_from_attributes(self) -> RecordRef | None:
        """The record click-to-dial, an IVR data dip or an earlier association left on the task."""
        record_id = self.attributes.get("sfdcObjectId")
        if not is_valid_id(record_id):
            # Attributes are anyone's to write (a Studio flow, another plugin, a caller's IVR input): what is not a
            # Salesforce id would only make the log fail (MALFORMED_ID); the screen pop searches instead.
            return None
        kind = self.attributes.get("sfdcObjectType") or object_type_for_id(record_id)
        return RecordRef(id=record_id, type=kind)

    def term_source(self) -> str:
        """Which attribute a screen-pop search uses (its name, never its value, goes into history)."""
        return next(
            (
                k
                for k in SEARCH_ATTRIBUTE_ORDER
                if isinstance(self.attributes.get(k), str) and self.attributes[k].strip()
            ),
            "attributes",
        )

    def conversations(self) -> dict:
        value = self.attributes.get("conversations")
        return value if isinstance(value, dict) else {}

    def worker_call_leg(self) -> str | None:
        leg = ((self.attributes.get("conference") or {}).get("participants") or {}).get("worker")
        return leg if isinstance(leg, str) else None
