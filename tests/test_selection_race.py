"""The agent's choice and the search result it was made from, in one workflow task.

When the search was an activity (runs from before the `pop-in-one-workflow-task` patch), a worker that died with the
search result in flight left that result waiting; an agent who already saw the candidates (a bridge retrying its
choice) chose in that gap, so the replacement worker got the search result and the choice in one workflow task. The
update's validator runs before the result is applied: it used to refuse the choice ("no candidate records"), and a
handler that assumed its candidate was there could not replay such a history. The choice is now checked once the pop
is decided.

The history below was recorded with that code: a workflow-only worker took the task up to the search, an
activity-only worker answered the search, the choice was admitted while no workflow worker ran, and a fresh worker
took both at once. Runs of today's code search in a local activity, inside the workflow task, so the gap is gone;
runs from before still have to replay.
"""

from __future__ import annotations

from pathlib import Path

from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

with workflow.unsafe.imports_passed_through():
    from flexsf.models import RecordRef, RecordSelection, Stage, TaskView, TaskWorkflowInput
    from workflows.task_workflow import FlexTaskWorkflow

# Kept apart from tests/histories (the recorder's scenarios), which the replay tests hold to their scenario list.
RACE = Path(__file__).parent / "recorded" / "selection_race.json"


def history() -> WorkflowHistory:
    return WorkflowHistory.from_json("flex-task-selection-race", RACE.read_text())


def workflow_tasks_between_search_result_and_choice(history: WorkflowHistory) -> int:
    """Workflow tasks completed after the search's completion and before the choice was accepted: 0 is the race."""
    events = list(history.events)
    search = next(
        e.event_id
        for e in events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "search_salesforce"
    )
    completed = next(
        i
        for i, e in enumerate(events)
        if e.HasField("activity_task_completed_event_attributes")
        and e.activity_task_completed_event_attributes.scheduled_event_id == search
    )
    accepted = next(
        i for i, e in enumerate(events) if e.HasField("workflow_execution_update_accepted_event_attributes")
    )
    return sum(1 for e in events[completed:accepted] if e.HasField("workflow_task_completed_event_attributes")) - 1


async def replay(workflow_class: type):
    replayer = Replayer(workflows=[workflow_class], data_converter=pydantic_data_converter)
    return await replayer.replay_workflow(history(), raise_on_replay_failure=False)


def test_the_stored_history_holds_the_race() -> None:
    assert workflow_tasks_between_search_result_and_choice(history()) == 0


async def test_the_current_workflow_replays_a_choice_that_came_with_its_search_result() -> None:
    result = await replay(FlexTaskWorkflow)
    assert result.replay_failure is None, result.replay_failure


@workflow.defn(name="FlexTaskWorkflow")
class ChoiceAssumesItsCandidate(FlexTaskWorkflow):
    """The handler as it was, the wait for the pop aside: it took its candidate for granted."""

    @workflow.run
    async def run(self, input: TaskWorkflowInput) -> TaskView:  # a workflow class declares its own run
        return await super().run(input)

    @workflow.update
    async def select_record(self, selection: RecordSelection) -> RecordRef:
        record = next(c for c in self._pop.candidates if c.id == selection.record_id)
        self._selections.add(1, {"when": "after_log" if self._activity_id else "before_log"})
        if self._stage == Stage.AWAITING_SELECTION:
            self._set_stage(Stage.IN_PROGRESS)
        await self._associate(record)
        return record


async def test_a_handler_that_assumes_its_candidate_cannot_replay_it() -> None:
    result = await replay(ChoiceAssumesItsCandidate)
    assert result.replay_failure is not None and "StopIteration" in str(result.replay_failure), result.replay_failure
