"""Progress bars for the long development commands (bench, soak, simulate).

Drawn only for a person watching: on a terminal, and not with `--json`, whose reader is a program. Piped, the
commands print their text lines and their table as before, and no bar's redraws end up in a log file.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def shows_bars(console: Console, as_json: bool) -> bool:
    return console.is_terminal and not as_json


class Bars:
    """One bar per phase; `add` returns the phase's advance function. Lines printed through `print` appear above the
    bars. Without bars everything still works: the bars are simply not drawn."""

    def __init__(self, console: Console | None = None, show: bool = False) -> None:
        self.console = console or Console(quiet=True)
        self._progress = (
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
            )
            if show
            else None
        )

    @property
    def shown(self) -> bool:
        return self._progress is not None

    def __enter__(self) -> Bars:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

    def add(self, description: str, total: int) -> Callable[..., None]:
        if self._progress is None:
            return lambda advance=1: None
        task = self._progress.add_task(description, total=total)
        return lambda advance=1: self._progress.advance(task, advance)

    def print(self, text: str) -> None:
        self.console.print(text)


NO_BARS = Bars()
