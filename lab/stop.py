"""How long-running training code learns that the run was asked to stop (Ctrl-C, SIGTERM).

The runner turns signals into a flag (``lab.runner.StopSignal``) and hands its ``requested``
method down as a ``StopCheck``: a task, an agent or a worker pool calls it after each step and
returns early. It lives at the bottom of the package so that agents need not import the runner
or the task layer above them.
"""

from collections.abc import Callable

StopCheck = Callable[[], bool]  # True once the run was asked to stop


def never() -> bool:
    """The stop check of a call that nothing interrupts (tests, benchmarks)."""
    return False
