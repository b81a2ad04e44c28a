"""Replay: the workflow code must still produce, command for command, the histories of workflows already in flight.

`tests/histories/*.json` are histories of finished task workflows recorded by `python -m tests.record_histories`
(docs/changing-the-workflow.md). Replaying them needs no server: the Replayer feeds each history to the
current `FlexTaskWorkflow` and fails on the first command that differs from what the history recorded.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

# The workflow sandbox re-imports this module for the variants defined below; the recorder (sandboxes, TLS) and
# the product modules come through as they are.
with workflow.unsafe.imports_passed_through():
    from flexsf.models import TaskView, TaskWorkflowInput
    from tests.record_histories import HISTORIES, SCENARIOS, activity_types
    from workflows.task_workflow import FlexTaskWorkflow

# The recorder's output, one file a scenario; histories of the code before a `workflow.patched` change are kept
# beside it in `before-<patch-id>/` until the patch is deprecated (docs/changing-the-workflow.md).
CURRENT = sorted(HISTORIES.glob("*.json"))
STORED = sorted(HISTORIES.rglob("*.json"))


def name(path: Path) -> str:
    return str(path.relative_to(HISTORIES).with_suffix(""))


def history(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(f"flex-task-{name(path)}", path.read_text())


async def replay(workflow_class: type, path: Path):
    replayer = Replayer(workflows=[workflow_class], data_converter=pydantic_data_converter)
    return await replayer.replay_workflow(history(path), raise_on_replay_failure=False)


def test_every_scenario_has_a_stored_history_and_every_history_a_scenario() -> None:
    assert {p.stem for p in CURRENT} == set(SCENARIOS), "re-record with `python -m tests.record_histories`"


@pytest.mark.parametrize("path", CURRENT, ids=name)
def test_stored_history_took_its_scenarios_path(path: Path) -> None:
    """A history recorded before a scenario changed would still replay while no longer covering what it claims."""
    assert activity_types(json.loads(path.read_text())) == SCENARIOS[path.stem].activities


@pytest.mark.parametrize("path", STORED, ids=name)
async def test_current_workflow_replays_stored_history(path: Path) -> None:
    result = await replay(FlexTaskWorkflow, path)
    assert result.replay_failure is None, result.replay_failure


# ---- the replay test must be able to fail: variants registered under the same workflow name ------------------------


@workflow.defn(name="FlexTaskWorkflow")
class TimerFirst(FlexTaskWorkflow):
    """A timer before the policy is loaded: the very first command differs from every history."""

    @workflow.run
    async def run(self, input: TaskWorkflowInput) -> TaskView:
        await workflow.sleep(timedelta(seconds=1))
        return await super().run(input)


@workflow.defn(name="FlexTaskWorkflow")
class ResolveOwnerAtAccept(FlexTaskWorkflow):
    """The example change of docs/changing-the-workflow.md made unguarded: a new activity when the task is accepted."""

    @workflow.run
    async def run(self, input: TaskWorkflowInput) -> TaskView:  # a workflow class declares its own run
        return await super().run(input)

    async def _screen_pop(self) -> None:
        await workflow.execute_activity(
            "resolve_salesforce_owner", self._task_sid, start_to_close_timeout=timedelta(seconds=10)
        )
        await super()._screen_pop()


@workflow.defn(name="FlexTaskWorkflow")
class ResolveOwnerAtAcceptPatched(FlexTaskWorkflow):
    """The same change guarded by `workflow.patched`, as docs/changing-the-workflow.md prescribes."""

    @workflow.run
    async def run(self, input: TaskWorkflowInput) -> TaskView:  # a workflow class declares its own run
        return await super().run(input)

    async def _screen_pop(self) -> None:
        if workflow.patched("resolve-owner-at-accept"):
            await workflow.execute_activity(
                "resolve_salesforce_owner", self._task_sid, start_to_close_timeout=timedelta(seconds=10)
            )
        await super()._screen_pop()


def popped(path: Path) -> bool:
    return "search_salesforce" in SCENARIOS[path.stem].activities


@pytest.mark.parametrize("path", STORED, ids=name)
async def test_a_timer_added_before_the_first_activity_breaks_replay(path: Path) -> None:
    result = await replay(TimerFirst, path)
    assert isinstance(result.replay_failure, workflow.NondeterminismError), result.replay_failure
    with pytest.raises(workflow.NondeterminismError):
        await Replayer(workflows=[TimerFirst], data_converter=pydantic_data_converter).replay_workflow(history(path))


@pytest.mark.parametrize("path", STORED, ids=name)
async def test_an_unguarded_activity_at_accept_breaks_every_history_that_was_popped(path: Path) -> None:
    result = await replay(ResolveOwnerAtAccept, path)
    if popped(path):
        assert isinstance(result.replay_failure, workflow.NondeterminismError), result.replay_failure
    else:
        # A canceled task never reached the pop: the changed code path never ran, so its history still replays.
        assert result.replay_failure is None, result.replay_failure


@pytest.mark.parametrize("path", STORED, ids=name)
async def test_the_same_activity_behind_workflow_patched_replays_every_history(path: Path) -> None:
    result = await replay(ResolveOwnerAtAcceptPatched, path)
    assert result.replay_failure is None, result.replay_failure


def test_the_histories_cover_pops_and_a_path_without_one() -> None:
    """Otherwise the two tests above could pass without exercising both of their branches."""
    assert any(popped(p) for p in STORED) and not all(popped(p) for p in STORED)
