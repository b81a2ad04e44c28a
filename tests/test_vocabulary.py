"""The task's vocabulary has one home (flexsf/vocabulary.py): the models, the agent bridge and the production code
spell flags, event names and the workflow id from it rather than from copies of their own."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from flexsf import vocabulary
from flexsf.models import FeatureFlags
from flexsf.settings import FeatureOverrides
from gateway.schemas import AgentConfig

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = ["flexsf", "activities", "workflows", "gateway", "ops", "worker.py"]
EVENT_NAMES = {
    value
    for name, value in vars(vocabulary).items()
    if name.startswith(("TASK_", "RESERVATION_")) and isinstance(value, str) and "." in value
}


def production_files() -> list[Path]:
    files: list[Path] = []
    for place in PRODUCTION:
        path = ROOT / place
        files += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return files


def string_literals(path: Path) -> list[tuple[int, str]]:
    """String constants in code, docstrings left out (they may name an event to explain it)."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_every_flag_model_has_exactly_the_vocabularys_flags() -> None:
    expected = set(vocabulary.FLAG_NAMES)
    assert set(FeatureFlags.model_fields) == expected
    assert set(FeatureOverrides.model_fields) == expected
    assert set(AgentConfig.model_fields) == expected


def test_the_agent_bridge_reads_the_same_flags() -> None:
    source = (ROOT / "agent-bridge" / "src" / "bridge.ts").read_text()
    interface = re.search(r"export interface AgentConfig \{(.*?)\}", source, re.S)
    assert interface, "bridge.ts no longer declares AgentConfig"
    assert set(re.findall(r"(\w+)\s*:\s*boolean", interface.group(1))) == set(vocabulary.FLAG_NAMES)


def test_event_names_and_the_workflow_id_prefix_are_spelled_only_in_the_vocabulary() -> None:
    assert EVENT_NAMES >= {"task.completed", "task.canceled", "reservation.accepted"}
    home = ROOT / "flexsf" / "vocabulary.py"
    copies = [
        f"{path.relative_to(ROOT)}:{line}: {value!r}"
        for path in production_files()
        if path != home
        for line, value in string_literals(path)
        if value in EVENT_NAMES or value.startswith(vocabulary.WORKFLOW_ID_PREFIX) or value == vocabulary.WORKFLOW_TYPE
    ]
    assert not copies, "spell these through flexsf.vocabulary:\n" + "\n".join(copies)


def test_workflow_ids_round_trip() -> None:
    assert vocabulary.workflow_id("WT123") == "flex-task-WT123"
    assert vocabulary.task_sid_of(vocabulary.workflow_id("WT123")) == "WT123"
