"""Progress bars per stage (rich), or silence when disabled."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class StageProgress:
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.console = Console(stderr=True)

    @contextmanager
    def stage(self, description: str, total: float) -> Iterator[Callable[[float], None]]:
        """Yield ``advance(amount)``; the bar closes (and stays on screen) when the block ends."""
        if not self.enabled:
            yield lambda amount: None
            return
        columns = (TextColumn("[bold]{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
        with Progress(*columns, console=self.console) as bar:
            task = bar.add_task(description, total=total)
            yield lambda amount: bar.advance(task, amount)

    def note(self, message: str) -> None:
        if self.enabled:
            self.console.print(message)

    def warn(self, message: str) -> None:
        """Shown even without progress bars."""
        self.console.print(f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)
