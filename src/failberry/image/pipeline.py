"""A flat list of named steps (mkosi, vmdb2): each runs in order and is logged with its
duration; a step's teardown is registered before the step runs, and every registered teardown
runs in reverse order afterwards, also after a failure or an interruption."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

LOG = logging.getLogger(__name__)

C = TypeVar("C")


@dataclass(frozen=True)
class Step(Generic[C]):
    """One named step: `run(ctx)`, and an optional `teardown(ctx)` that always runs."""

    name: str
    run: Callable[[C], None]
    teardown: Callable[[C], None] | None = None


@dataclass
class Timeline:
    """How long each step took, in order, for the final report and the benchmark."""

    steps: list[tuple[str, float]] = field(default_factory=list)

    def total(self) -> float:
        """Sum of the step durations."""
        return sum(d for _, d in self.steps)

    def lines(self) -> list[str]:
        """One line per step: name and seconds."""
        return [f"  {name:<24} {secs:7.1f}s" for name, secs in self.steps]


def step_names(steps: Sequence[Step[C]]) -> list[str]:
    """The step names, checked to be unique (they name the log lines and the timeline)."""
    names = [s.name for s in steps]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate step names: {', '.join(dupes)}")
    return names


def run_steps(steps: Sequence[Step[C]], ctx: C, *,
              clock: Callable[[], float] = time.monotonic) -> Timeline:
    """Run `steps` in order on `ctx`; run the registered teardowns in reverse at the end."""
    names = step_names(steps)
    timeline = Timeline()
    teardowns: list[Step[C]] = []
    try:
        for i, step in enumerate(steps):
            LOG.info("[%d/%d] %s", i + 1, len(names), step.name)
            if step.teardown is not None:
                teardowns.append(step)
            started = clock()
            try:
                step.run(ctx)
            finally:
                timeline.steps.append((step.name, clock() - started))
            LOG.info("[%d/%d] %s done in %.1fs", i + 1, len(names), step.name,
                     timeline.steps[-1][1])
    finally:
        _teardown(teardowns, ctx)
    return timeline


def _teardown(teardowns: list[Step[C]], ctx: C) -> None:
    for step in reversed(teardowns):
        assert step.teardown is not None
        try:
            step.teardown(ctx)
        except Exception:
            # Keep tearing down: one failed cleanup must not leave the others' resources.
            LOG.exception("teardown of step %s failed", step.name)
        except KeyboardInterrupt:
            LOG.warning("interrupted during teardown of %s; finishing the teardowns", step.name)
