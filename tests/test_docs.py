"""The docs a user reads agree with the code: the generated configuration reference, the README's shape, every link."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from devtools import config_docs
from tests.test_deployment_files import setting_names

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
LINKED_FROM = [ROOT / "README.md", *DOCS, ROOT / "sandboxes/salesforce/README.md", ROOT / "sandboxes/twilio/README.md"]
_FENCE = re.compile(r"^```.*?^```", re.M | re.S)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def relative_links(path: Path) -> list[str]:
    """Link targets of a Markdown file that point into the repository (not URLs, not in-page anchors, not code)."""
    text = _CODE.sub("", _FENCE.sub("", path.read_text(encoding="utf-8")))
    targets = [m[1] for m in _LINK.finditer(text)]
    return [t for t in targets if not re.match(r"^(https?:|mailto:|#)", t)]


def test_configuration_reference_is_generated_from_the_settings_model() -> None:
    on_disk = (ROOT / "docs/configuration.md").read_text(encoding="utf-8")
    assert on_disk == config_docs.render(), "docs/configuration.md is stale: run python -m devtools.config_docs"


def test_configuration_reference_lists_every_variable_and_temporals_own() -> None:
    text = config_docs.render()
    names = {env for _, env, _ in config_docs.variables()}
    assert names == setting_names() and "FLEXSF_FEATURES__SCREEN_POP" in names
    for name in [*names, "TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_API_KEY", "TEMPORAL_TLS"]:
        assert f"| `{name}` |" in text, name
    assert "(not documented" not in text and "## Other" not in text


def test_secrets_show_no_default_and_types_read_as_words() -> None:
    rows = {line.split(" | ")[0].strip("| `"): line.split(" | ") for line in config_docs.render().splitlines()}
    for name in ("SALESFORCE_CLIENT_SECRET", "SALESFORCE_PASSWORD", "TWILIO_AUTH_TOKEN", "FLEXSF_ENCRYPTION_KEYS"):
        assert rows[name][1:3] == ["secret", "unset"], rows[name]
    assert rows["FLEXSF_SEARCH_LIMIT"][1:3] == ["integer, ≥ 1, ≤ 200", "`20`"]
    assert rows["FLEXSF_REPAIR_WINDOW_S"][2] == "`604800` (7 d)"
    assert rows["FLEXSF_OWNER_MAPPING"][1] == "one of `email`, `sfdcUserId`, `none`"
    assert rows["FLEXSF_SEARCH_OBJECTS"][2] == "`Contact,Lead,Account`"


def test_check_exits_1_with_one_line_when_the_file_differs(tmp_path: Path, capsys) -> None:
    target = tmp_path / "configuration.md"
    assert config_docs.main(["--output", str(target)]) == 0
    assert config_docs.main(["--check", "--output", str(target)]) == 0
    target.write_text(target.read_text() + "edited by hand\n")
    capsys.readouterr()
    assert config_docs.main(["--check", "--output", str(target)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "python -m devtools.config_docs" in err
    assert config_docs.main(["--check", "--output", str(tmp_path / "missing.md")]) == 1


def test_config_docs_imports_no_sandbox() -> None:
    source = Path(config_docs.__file__).read_text(encoding="utf-8")
    assert not re.search(r"^\s*(from|import)\s+sandboxes", source, re.M)


def test_readme_is_short_and_draws_the_system() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    assert "```mermaid" in text
    for command in ("make run", "make test"):
        assert command in text


@pytest.mark.parametrize("path", LINKED_FROM, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file(path: Path) -> None:
    broken = [t for t in relative_links(path) if not (path.parent / t.split("#")[0]).exists()]
    assert not broken, f"{path.relative_to(ROOT)} links to missing files: {broken}"


def test_the_readme_leads_into_every_doc() -> None:
    linked = {(ROOT / t.split("#")[0]).resolve() for t in relative_links(ROOT / "README.md")}
    assert ROOT / "docs/adding-a-step.md" in linked
    assert not [d.name for d in DOCS if d.resolve() not in linked]


def test_every_salesforce_error_class_of_the_code_has_a_row_in_the_docs_table() -> None:
    from activities.errors import SALESFORCE_ERROR_CLASSES

    text = (ROOT / "docs" / "how-a-task-moves.md").read_text()
    table = text[text.index("### Error classes") :]
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    for code in SALESFORCE_ERROR_CLASSES:
        assert any(f"`{code}`" in row for row in rows), code
