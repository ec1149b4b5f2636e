"""Schedules over a run as pure functions of the step: exploration rates, learning rates."""


def linear_schedule(step: int, start: float, end: float, duration: int) -> float:
    """Linear from ``start`` at step 0 to ``end`` at ``duration``, constant after."""
    if duration <= 0:
        return end
    fraction = min(step / duration, 1.0)
    return start + fraction * (end - start)


def annealed_lr(lr: float, anneal: bool, step: int, total_steps: int) -> float:
    """``lr``, or with ``anneal`` linearly from ``lr`` at step 0 to 0 at ``total_steps``."""
    return linear_schedule(step, lr, 0.0, total_steps) if anneal else lr
