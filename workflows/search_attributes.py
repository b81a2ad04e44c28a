"""The task workflow's search attributes: typed keys, so visibility queries can find tasks by what ops ask about.

All Keyword (exact match). They must exist on the namespace before a worker runs: `flexsf dev` and the tests register
them on every dev server they start (flexsf/temporal_server.py); for a self-hosted cluster or Temporal Cloud, see the
README ("Operating") or `flexsf search-attributes`.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

FLEX_TASK_SID = SearchAttributeKey.for_keyword("FlexTaskSid")
FLEX_WORKER_SID = SearchAttributeKey.for_keyword("FlexWorkerSid")
FLEX_CHANNEL = SearchAttributeKey.for_keyword("FlexChannel")
FLEX_DIRECTION = SearchAttributeKey.for_keyword("FlexDirection")
FLEX_STAGE = SearchAttributeKey.for_keyword("FlexStage")
SFDC_OBJECT_ID = SearchAttributeKey.for_keyword("SfdcObjectId")
SFDC_ACTIVITY_ID = SearchAttributeKey.for_keyword("SfdcActivityId")

ALL = (FLEX_TASK_SID, FLEX_WORKER_SID, FLEX_CHANNEL, FLEX_DIRECTION, FLEX_STAGE, SFDC_OBJECT_ID, SFDC_ACTIVITY_ID)

# Name → the type name the `temporal` CLI and Temporal Cloud use.
DEFINITIONS: dict[str, str] = {key.name: "Keyword" for key in ALL}
