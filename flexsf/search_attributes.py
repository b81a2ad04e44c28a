"""The task workflow's search attributes: typed keys, so visibility queries can find tasks by what ops ask about.

All Keyword (exact match). They must exist on the namespace before a worker runs: `flexsf dev` and the tests register
them on every dev server they start (devtools/temporal_server.py); for a self-hosted cluster or Temporal Cloud, see the
docs/operating.md ("Search attributes") or `flexsf search-attributes`.
"""

from __future__ import annotations

from collections.abc import Iterable

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey

FLEX_TASK_SID = SearchAttributeKey.for_keyword("FlexTaskSid")
FLEX_WORKER_SID = SearchAttributeKey.for_keyword("FlexWorkerSid")
FLEX_CHANNEL = SearchAttributeKey.for_keyword("FlexChannel")
FLEX_DIRECTION = SearchAttributeKey.for_keyword("FlexDirection")
FLEX_STAGE = SearchAttributeKey.for_keyword("FlexStage")
SFDC_OBJECT_ID = SearchAttributeKey.for_keyword("SfdcObjectId")
SFDC_ACTIVITY_ID = SearchAttributeKey.for_keyword("SfdcActivityId")
# The Flex interaction (KD…) and its channel (UO…) a task belongs to, from the task's attributes: Agent Copilot's
# wrap-up notes webhook names these, never the task (gateway/routes/copilot.py finds the task's workflow by them).
FLEX_INTERACTION_SID = SearchAttributeKey.for_keyword("FlexInteractionSid")
FLEX_INTERACTION_CHANNEL_SID = SearchAttributeKey.for_keyword("FlexInteractionChannelSid")

ALL = (
    FLEX_TASK_SID,
    FLEX_WORKER_SID,
    FLEX_CHANNEL,
    FLEX_DIRECTION,
    FLEX_STAGE,
    SFDC_OBJECT_ID,
    SFDC_ACTIVITY_ID,
    FLEX_INTERACTION_SID,
    FLEX_INTERACTION_CHANNEL_SID,
)

# Name → the type name the `temporal` CLI and Temporal Cloud use.
DEFINITIONS: dict[str, str] = {key.name: "Keyword" for key in ALL}


async def missing_search_attributes(client: Client, namespace: str | None = None) -> list[str]:
    """The task workflow's search attributes the namespace lacks (workflows cannot index themselves without them)."""
    response = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace or client.namespace)
    )
    present = set(response.custom_attributes) | set(response.system_attributes)
    return [name for name in DEFINITIONS if name not in present]


async def create_search_attributes(client: Client, names: Iterable[str], namespace: str | None = None) -> None:
    """Self-hosted clusters only (Temporal Cloud adds them with `tcld` or its UI)."""
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=namespace or client.namespace,
            search_attributes={name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for name in names},
        )
    )
