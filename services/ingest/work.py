"""Pure functions of the ingest stage: which steps close (the messages it then sends are the
contract with the graph stage, in shared/work_messages.py).

Kept apart from the service loop so the rules can be tested without sockets, files or clocks.
"""

from __future__ import annotations

from collections.abc import Iterable


def steps_to_close(steps: Iterable[int], closed: set[int], close_latest: bool) -> list[int]:
    """Steps whose snapshot is final and not yet emitted, oldest first.

    A step is final once a later step has data, or at once when each source file is exactly one
    step (GDELT 2.0 with 15-minute steps), which ``close_latest`` says.
    """
    ordered = sorted(set(steps))
    final = ordered if close_latest else ordered[:-1]
    return [t for t in final if t not in closed]
