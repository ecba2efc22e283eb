"""Errors meant for people: what was expected, what was found, where, and what to do."""

from __future__ import annotations

from pathlib import Path


class FashionConvError(Exception):
    """A problem the user can fix (bad input, missing data, bad option); printed without a traceback."""


class ArgumentValueError(FashionConvError, ValueError):
    """A constructor argument is out of range. The message names the argument as the class spells it (``lr``);
    ``python -m fashion_conv.fit`` prints it under the flag's name (``--model.lr``)."""

    def __init__(self, argument: str, problem: str):
        super().__init__(f"{argument}{'' if problem.startswith(':') else ' '}{problem}")  # "lr must be ...", "backbone: ..."
        self.argument, self.problem = argument, problem

    def under(self, flag: str) -> str:
        """The message with the argument named as a command line spells it: ``under("--model.lr")``."""
        return flag + str(self)[len(self.argument):]


class DataError(FashionConvError):
    """A data file is unusable. The message names the file and, where known, the line and column."""

    def __init__(self, path: str | Path, problem: str, line: int | None = None, column: int | None = None):
        where = str(path)
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column {column}"
        super().__init__(f"{where}: {problem}")
        self.path, self.problem, self.line, self.column = Path(path), problem, line, column
