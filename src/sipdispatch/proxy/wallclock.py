"""Unix time for the event loop's monotonic timestamps.

Health records keep the loop's monotonic time, which never jumps with the wall clock. Reports
and the control API show Unix time. The offset between the two clocks is taken once per
process: an offset taken afresh for every report moves an unchanged ``changedAt`` by a
millisecond or so, and whoever reads the reports would see a change that did not happen.
(asyncio's and uvloop's ``loop.time()`` both read ``CLOCK_MONOTONIC``, as ``time.monotonic``.)
"""

from __future__ import annotations

import time

_OFFSET = time.time() - time.monotonic()


def clock_offset() -> float:
    """What to add to a loop time to get Unix time; the same for the life of the process."""
    return _OFFSET
