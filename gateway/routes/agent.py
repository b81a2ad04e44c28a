"""The agent API: what the Flex plugin (and the Salesforce softphone) asks and tells about the agent's tasks.

Every call carries the agent's Flex token (`Authorization: Bearer …`). An agent acts only on tasks their worker
accepted; a supervisor may read anyone's task but acts only on their own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from temporalio.client import (
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from flexsf import delivery, logs
from flexsf.dial_policy import DialPolicy, DialRefused
from flexsf.flex_config import FlexConfigCache
from flexsf.models import FeatureFlags, PopAnswer, PopWait, RecordSelection, TaskView
from flexsf.no_match_pop import NoMatchPop
from flexsf.salesforce_ids import object_type_for_id
from flexsf.settings import Settings
from flexsf.vocabulary import NOTES_PER_TASK_MAX, workflow_id
from gateway.auth import Agent
from gateway.deps import AgentDep, FlexConfigDep, SettingsDep, TemporalClientDep
from gateway.sanitize import printable
from gateway.schemas import (
    POP_WAIT_DEFAULT_S,
    POP_WAIT_MAX_S,
    TASK_SID_PATTERN,
    AgentConfig,
    ClickToDialIn,
    NotesIn,
    OutboundTaskAttributes,
    PopAnswerOut,
    PopRequest,
    Problem,
    RecordChoice,
    RecordOut,
    StartOutboundCall,
    TaskOut,
)
from gateway.taskrouter_tasks import TaskRouterTasks, TaskRouterUnavailable
from gateway.temporal_errors import unavailable
from workflows.task_workflow import NOT_THIS_WORKERS_TASK, FlexTaskWorkflow

log = logging.getLogger("flexsf.gateway.agent")

router = APIRouter(prefix="/agent", tags=["agent"])

TEMPORAL_RPC_TIMEOUT = timedelta(seconds=10)

TaskSid = Annotated[str, Path(pattern=TASK_SID_PATTERN, description="The Flex (TaskRouter) task sid, WT…")]

_AUTH = {
    401: {"model": Problem, "description": "Missing, invalid or expired Flex token"},
    413: {"model": Problem, "description": "A body over the route's limit (gateway/limits.py)"},
    429: {"model": Problem, "description": "Too many failed authentications from this address (Retry-After)"},
    503: {"model": Problem, "description": "Twilio or Temporal is unreachable"},
}
_TASK = {
    **_AUTH,
    403: {"model": Problem, "description": "Not this agent's task"},
    404: {"model": Problem, "description": "No workflow for this task"},
}


def _handle(client, task_sid: str) -> WorkflowHandle:
    return client.get_workflow_handle_for(FlexTaskWorkflow.run, workflow_id(task_sid))


@asynccontextmanager
async def _temporal(task_sid: str, *, closed_is_conflict: bool = False) -> AsyncIterator[None]:
    """Temporal's errors as HTTP answers: NOT_FOUND is 404 (or 409 once we know the workflow existed), outages 503."""
    try:
        yield
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            if closed_is_conflict:
                raise HTTPException(
                    409, f"task {task_sid} is finished: its workflow no longer accepts changes"
                ) from None
            raise HTTPException(404, f"no workflow for task {task_sid}") from None
        raise unavailable(exc, f"a call for task {task_sid}") from None
    except WorkflowQueryFailedError as exc:
        log.warning("the workflow of task %s failed a query: %s", task_sid, printable(exc, 300))
        raise HTTPException(503, f"the workflow of task {task_sid} could not answer; retry later") from None
    except (OSError, TimeoutError, RuntimeError) as exc:
        if (answer := unavailable(exc, f"a call for task {task_sid}")) is None:
            raise
        raise answer from None


async def _view(client, task_sid: str) -> TaskView:
    async with _temporal(task_sid):
        return await _handle(client, task_sid).query(FlexTaskWorkflow.view, rpc_timeout=TEMPORAL_RPC_TIMEOUT)


async def _workflow_exists(client, task_sid: str) -> bool:
    try:
        async with _temporal(task_sid):
            await _handle(client, task_sid).describe(rpc_timeout=TEMPORAL_RPC_TIMEOUT)
    except HTTPException as exc:
        if exc.status_code == 404:
            return False
        raise
    return True


async def _known_to_taskrouter(request: Request, task_sid: str) -> None:
    """Before the long-poll starts a task's workflow: only for a task TaskRouter has (gateway.taskrouter_tasks)."""
    tasks: TaskRouterTasks | None = request.app.state.taskrouter_tasks
    if tasks is None:
        raise HTTPException(503, "the pop's long-poll needs TWILIO_WORKSPACE_SID to check a task it has not seen")
    try:
        known = await tasks.exists(task_sid)
    except TaskRouterUnavailable:
        raise HTTPException(
            503, f"TaskRouter could not confirm task {task_sid} now; retry later", headers={"Retry-After": "2"}
        ) from None
    if not known:
        raise HTTPException(404, f"TaskRouter has no task {task_sid}")


def _authorize(agent: Agent, view: TaskView, *, act: bool) -> None:
    if view.worker_sid is not None and view.worker_sid == agent.worker_sid:
        return
    if agent.is_supervisor and not act:
        return
    if agent.is_supervisor:
        raise HTTPException(
            403, "supervisors may read other agents' tasks but only the agent who accepted the task may act on it"
        )
    if view.worker_sid is None:
        raise HTTPException(403, "this task has not been accepted by you (no worker has accepted it yet)")
    raise HTTPException(403, "this task was accepted by another worker")


async def _flags(cache: FlexConfigCache) -> FeatureFlags:
    try:
        return await asyncio.to_thread(cache.flags)
    except Exception as exc:  # the twilio SDK raises many types; all mean "no answer"
        log.warning("could not read the Flex configuration: %s", type(exc).__name__)
        raise HTTPException(503, "could not read the Flex configuration; retry later") from None


@router.get("/tasks/{task_sid}", response_model=TaskOut, responses=_TASK)
async def get_task(task_sid: TaskSid, agent: AgentDep, client: TemporalClientDep, settings: SettingsDep) -> TaskOut:
    """The task's stage, screen pop (one record, candidates, or what to open when nothing matched), chosen record,
    notes and Salesforce log."""
    view = await _view(client, task_sid)
    _authorize(agent, view, act=False)
    no_match = NoMatchPop.parse(settings.flexsf_search_no_match_pop)
    return TaskOut.of(view, no_match, settings.flexsf_default_region)


@router.get(
    "/tasks/{task_sid}/pop",
    response_model=PopAnswerOut,
    responses={**_TASK, 422: {"description": f"A wait outside (0, {POP_WAIT_MAX_S:.0f}] seconds"}},
)
async def await_pop(
    http_request: Request,
    task_sid: TaskSid,
    agent: AgentDep,
    client: TemporalClientDep,
    settings: SettingsDep,
    wait_s: Annotated[
        float, Query(gt=0, le=POP_WAIT_MAX_S, description="How long to wait for the decision, in seconds")
    ] = POP_WAIT_DEFAULT_S,
) -> PopAnswerOut:
    """The task's screen pop, answered the moment the workflow decides it (a long-poll: no need to poll the task).
    `decided: false` when `wait_s` passed first: ask again. Works before TaskRouter's `reservation.accepted` callback
    reached the gateway (the call starts the task's workflow and waits for it); only the worker who accepted the task
    is answered, including when the acceptance arrives during the wait (403 then). `POST /agent/pop` is the same
    long-poll at one URL for every task (what the bridge calls from the browser)."""
    return await _await_pop(http_request, task_sid, wait_s, agent, client, settings)


@router.post(
    "/pop",
    response_model=PopAnswerOut,
    responses={
        **_TASK,
        422: {
            "description": f"A malformed body, a task sid that is not one, or a wait outside (0, {POP_WAIT_MAX_S:.0f}] "
            "seconds"
        },
    },
)
async def await_pop_at_one_url(
    http_request: Request, ask: PopRequest, agent: AgentDep, client: TemporalClientDep, settings: SettingsDep
) -> PopAnswerOut:
    """`GET /agent/tasks/{task_sid}/pop` with the task and the wait in the body: the same answers and errors. A browser
    preflights every cross-origin call carrying a token and caches the preflight per URL, so a sid in the path costs
    every task a preflight; at this one URL the browser pays one per `Access-Control-Max-Age`."""
    logs.set_task(ask.task_sid)  # the metrics middleware binds a sid it finds in the path; this one is in the body
    return await _await_pop(http_request, ask.task_sid, ask.wait_s, agent, client, settings)


async def _await_pop(
    http_request: Request, task_sid: str, wait_s: float, agent: Agent, client, settings: Settings
) -> PopAnswerOut:
    """The pop's long-poll behind both of its routes."""
    request = PopWait(worker_sid=agent.worker_sid, wait=timedelta(seconds=wait_s))
    if not await _workflow_exists(client, task_sid):
        await _known_to_taskrouter(http_request, task_sid)
    try:
        async with _temporal(task_sid):
            answer = await delivery.await_pop(client, settings.flexsf_task_queue, task_sid, request)
    except WorkflowAlreadyStartedError:
        # The task's workflow has completed (its id is not reused): its pop is long decided, the query still answers.
        view = await _view(client, task_sid)
        _authorize(agent, view, act=True)
        answer = PopAnswer(decided=True, stage=view.stage, pop=view.pop)
    except WorkflowUpdateFailedError as exc:
        if getattr(exc.cause, "type", None) == NOT_THIS_WORKERS_TASK:
            raise HTTPException(403, "this task was accepted by another worker") from None
        raise HTTPException(422, getattr(exc.cause, "message", None) or str(exc.cause)) from None
    except WorkflowUpdateRPCTimeoutOrCancelledError:
        # No worker answered within the wait and its margin (all down, a backlog): the workflow's own timer would
        # have answered `decided: false` otherwise.
        log.warning("the pop of task %s was not answered in time", task_sid)
        raise HTTPException(503, f"no worker answered for task {task_sid} in time; retry later") from None
    no_match = NoMatchPop.parse(settings.flexsf_search_no_match_pop)
    return PopAnswerOut.of(answer, no_match, settings.flexsf_default_region)


@router.put(
    "/tasks/{task_sid}/record",
    response_model=RecordOut,
    responses={
        **_TASK,
        409: {"model": Problem, "description": "The task's workflow has finished"},
        422: {"description": "Not one of the task's candidate records, or a malformed body"},
    },
)
async def select_record(
    task_sid: TaskSid, choice: RecordChoice, agent: AgentDep, client: TemporalClientDep
) -> RecordOut:
    """Choose which of several matching records the task relates to (written to the task's attributes)."""
    view = await _view(client, task_sid)
    _authorize(agent, view, act=True)
    selection = RecordSelection(worker_sid=agent.worker_sid, record_id=choice.record_id)
    try:
        async with _temporal(task_sid, closed_is_conflict=True):
            record = await _handle(client, task_sid).execute_update(
                FlexTaskWorkflow.select_record, selection, rpc_timeout=TEMPORAL_RPC_TIMEOUT
            )
    except WorkflowUpdateFailedError as exc:
        reason = getattr(exc.cause, "message", None) or str(exc.cause)
        raise HTTPException(422, reason) from None
    return RecordOut.of(record)


@router.post(
    "/tasks/{task_sid}/notes",
    status_code=204,
    response_class=Response,
    responses={
        **_TASK,
        409: {"model": Problem, "description": "The task's workflow has finished"},
        422: {
            "description": "A field over its cap (named in the error's `loc`), a malformed body, or more "
            f"submissions than one task takes ({NOTES_PER_TASK_MAX})"
        },
    },
)
async def submit_notes(task_sid: TaskSid, notes: NotesIn, agent: AgentDep, client: TemporalClientDep) -> Response:
    """The agent copilot's wrap-up notes; they go into the Salesforce log (answered once the workflow has them). Each
    submission replaces the last; a task takes at most NOTES_PER_TASK_MAX of them."""
    view = await _view(client, task_sid)
    _authorize(agent, view, act=True)
    try:
        async with _temporal(task_sid, closed_is_conflict=True):
            await _handle(client, task_sid).execute_update(
                FlexTaskWorkflow.add_notes, notes.to_notes(), rpc_timeout=TEMPORAL_RPC_TIMEOUT
            )
    except WorkflowUpdateFailedError as exc:
        raise HTTPException(422, getattr(exc.cause, "message", None) or str(exc.cause)) from None
    return Response(status_code=204)


@router.post(
    "/click-to-dial",
    response_model=StartOutboundCall,
    # StartOutboundCall adds taskAttributes to the task Flex creates: an explicit null may overwrite a value of its own.
    response_model_exclude_none=True,
    responses={
        **_AUTH,
        409: {"model": Problem, "description": "Click-to-dial is off"},
        422: {
            "description": "A number the destination policy refuses (the reason is for the agent: premium rate, "
            "another country …), not a phone number, or a malformed body"
        },
    },
)
async def click_to_dial(
    dial: ClickToDialIn, agent: AgentDep, settings: SettingsDep, flex_config: FlexConfigDep
) -> StartOutboundCall:
    """Turn what Open CTI's `onClickToDial` hands the softphone into Flex's `StartOutboundCall` payload, if the
    destination policy allows the number (`flexsf.dial_policy`: allowed countries, no premium-rate, shared-cost,
    satellite … numbers, short codes only when allowed)."""
    flags = await _flags(flex_config)
    if not flags.enabled:
        raise HTTPException(409, "the Salesforce integration is off in the Flex configuration")
    if not flags.click_to_dial:
        raise HTTPException(409, "click-to-dial is off in the Flex configuration")
    try:
        destination = DialPolicy.from_settings(settings).destination(dial.number)
    except DialRefused as refused:
        raise HTTPException(422, refused.reason) from None
    if dial.personAccount and dial.contactId:
        # Activities on a person account relate to its contact, as the original plugin does.
        record_id, record_type = dial.contactId, "Contact"
    else:
        record_id = dial.recordId
        record_type = dial.objectType or (object_type_for_id(dial.recordId) if dial.recordId else None)
    return StartOutboundCall(
        destination=destination,
        taskAttributes=OutboundTaskAttributes(
            sfdcObjectId=record_id, sfdcObjectType=record_type if record_id else None, name=dial.recordName
        ),
    )


@router.get("/config", response_model=AgentConfig, responses=_AUTH)
async def get_config(agent: AgentDep, flex_config: FlexConfigDep) -> AgentConfig:
    """The Salesforce integration's feature flags, for the plugin to decide what to show."""
    return AgentConfig.of(await _flags(flex_config))
