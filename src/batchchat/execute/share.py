"""Limits kept beyond one executor: the seam through which several executors share a budget.

A local run's :class:`~batchchat.execute.admission.Admission` keeps its RPM and TPM
buckets and the server's hold to itself. When several executors send for one job (the
Ray engine's workers, each in its own process), the spec's limits are the whole job's,
so a :class:`LimitShare` given to each Admission supplies the buckets (pacers whose
capacity is leased from one place) and carries holds both ways: a hold this executor
sets is told to the others, and a hold another set is applied here; and what a
server's window has left is shared out rather than spent by each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

from batchchat.execute.pacing import Pacer

#: what a per-minute limit counts
Quota = Literal["requests", "tokens"]


class LimitShare(Protocol):
    """Where an executor's per-minute budgets and rate-limit holds are kept with others'."""

    def pacer(self, kind: Quota, per_minute: float) -> Pacer:
        """The bucket for a ``per_minute`` limit of ``kind``, shared with the others."""
        ...

    def attach(self, hold_until: Callable[[float], object]) -> None:
        """Apply the holds the others set through ``hold_until`` (a clock time, this
        executor's clock)."""
        ...

    def held(self, until: float) -> None:
        """This executor holds every attempt until clock time ``until``: tell the others."""
        ...

    def window_part(self, left: float) -> float:
        """This executor's part of the ``left`` sends a server says its window still takes
        (a gateway's calendar minute, with no reset: every executor hears the same count)."""
        ...
