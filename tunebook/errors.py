"""Errors a user can act on.

Every failure that comes from the user's input (a recipe, ARGS, a data file) is raised as a
`TunebookError` carrying one line per problem, each naming the file, line and key. The CLI
prints them and exits 2, so no user ever has to read a traceback from deep in a library.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one place in one input."""

    source: str  # a file path, or "ARGS"
    key: str  # dotted key path ("datasets.0.type"), "" for the whole file
    message: str
    line: int | None = None  # 1-based

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        key = f" {self.key}:" if self.key else ""
        return f"{where}:{key} {self.message}"


class TunebookError(Exception):
    """A user-facing failure; `exit_code` 2 means "your input is wrong", 1 "the run failed"."""

    def __init__(self, problems: list[Problem] | str, exit_code: int = 2, hint: str = ""):
        if isinstance(problems, str):
            problems = [Problem(source="tunebook", key="", message=problems)]
        self.problems = list(problems)
        self.exit_code = exit_code
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"error: {p}" for p in self.problems]
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)
