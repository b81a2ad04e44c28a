"""What TaskRouter has told a task's workflow: its events, deduplicated, and what follows from them.

Deterministic and free of I/O, like the workflow that holds it.
"""

from __future__ import annotations

import re

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from flexsf.models import CarriedFacts, RecordRef, TaskEvent
    from flexsf.salesforce_ids import is_valid_id, object_type_for_id
    from flexsf.search_terms import SEARCH_ATTRIBUTE_ORDER
    from flexsf.vocabulary import FINISHED_EVENTS as FINISHED
    from flexsf.vocabulary import GONE_EVENTS as GONE
    from flexsf.vocabulary import RESERVATION_ACCEPTED as ACCEPTED
    from flexsf.vocabulary import TASK_WRAPUP as WRAPUP


class TaskFacts:
    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.event_count = 0
        self.attributes: dict = {}
        self.attributes_at = -1
        self.channel: str | None = None
        self.accepted: TaskEvent | None = None
        # The first task.wrapup: the call (or chat) ended there, and the agent's handling time with it.
        self.wrapped: TaskEvent | None = None
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
            wrapped=self.wrapped.model_copy(update={"task_attributes": {}}) if self.wrapped else None,
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
        facts.wrapped = carried.wrapped
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
        elif event.event_type == WRAPUP and self.wrapped is None:
            self.wrapped = event
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
        """The channel as the log names it (`voice`, `chat`, `sms`, `whatsapp`, `email`, else the raw name), from the
        TaskChannel's unique name and, where that is the generic `chat` (Flex Conversations routes SMS, WhatsApp and
        web chat alike on it) or `default`, the `channelType` attribute that says which messaging channel it is."""
        return channel_name(self.channel, self.attributes.get("channelType"))

    def legacy_channel_name(self) -> str:
        """The name runs before `task-channel-names` used (their histories replay with it): the TaskChannel first,
        anything unknown taken for voice."""
        channel = self.channel or self.attributes.get("channelType") or "voice"
        return "chat" if channel == "web" else channel

    def handle_time_s(self) -> int | None:
        """Seconds the agent handled the task: from the reservation's acceptance to wrap-up (the conversation
        ended), or to the finish when no wrap-up came. From TaskRouter's event timestamps, never a clock; None when
        no agent accepted it or a timestamp is unknown."""
        end = self.wrapped or self.finished
        if self.accepted is None or end is None or not self.accepted.timestamp_ms or not end.timestamp_ms:
            return None
        return max(0, round((end.timestamp_ms - self.accepted.timestamp_ms) / 1000))

    def task_age_s(self) -> int | None:
        """TaskRouter's TaskAge at the finish: queue, handling and wrap-up together."""
        return self.finished.task_age if self.finished else None

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

    def interaction_sids(self) -> tuple[str | None, str | None]:
        """The Flex interaction (KD…) and interaction channel (UO…) named by the task's attributes
        (`flexInteractionSid`, `flexInteractionChannelSid`), each only when it is shaped like such a sid: attributes
        are anyone's to write, and a search attribute value that is not a short keyword would fail the upsert."""
        return (
            _sid_or_none(self.attributes.get("flexInteractionSid"), "KD"),
            _sid_or_none(self.attributes.get("flexInteractionChannelSid"), "UO"),
        )

    def worker_call_leg(self) -> str | None:
        leg = ((self.attributes.get("conference") or {}).get("participants") or {}).get("worker")
        return leg if isinstance(leg, str) else None


def _sid_or_none(value: object, prefix: str) -> str | None:
    return value if isinstance(value, str) and re.fullmatch(prefix + "[0-9a-fA-F]{32}", value) else None


# The channel names a log uses; `web` is what Flex's webchat calls its channelType.
KNOWN_CHANNELS = frozenset({"voice", "chat", "sms", "whatsapp", "email"})
_CHANNEL_ALIASES = {"web": "chat"}
# TaskChannels that do not say which messaging channel a task came by.
_GENERIC_CHANNELS = frozenset({"chat", "default"})
# A TaskChannel unique name is short; an attribute could be anything (it goes into the Subject and a search attribute).
_CHANNEL_NAME_MAX = 64


def channel_name(task_channel: str | None, channel_type: object) -> str:
    """`voice`, `chat`, `sms`, `whatsapp`, `email`, or the raw name of another channel; `default` when nothing says
    (TaskRouter's own name for a task created without a channel)."""
    raw = _plain(task_channel)
    if raw in _GENERIC_CHANNELS or raw is None:
        raw = _plain(channel_type) or raw
    return _CHANNEL_ALIASES.get(raw, raw) if raw else "default"


def _plain(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    value = "".join(ch for ch in value.strip().lower() if ch.isprintable())[:_CHANNEL_NAME_MAX]
    return value or None
