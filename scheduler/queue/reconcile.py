"""Which queued jobs a reconcile pass reads: every one, or only those created lately.

A job can be committed and missing from the waiting index only if its push failed or its
process died before the push (then it was created moments before), or if Redis lost data. So a
pass reads the queued jobs created since the last pass, less ``lookback_s`` (the longest submit
transaction, the clock skew between API hosts), and its cost follows what arrived, not the
backlog. The point it reads from is kept in Redis beside the index: a flush takes it away (the
next pass reads everything), and a Redis restored from an older snapshot restores an older point
(the pass reads back over what the snapshot lacks). A pass reads everything when asked (a new
leader, Redis found empty, an outage ended) and every ``full_every_s``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from imagequeue import keys
from scheduler.queue.index import WaitingIndex
from scheduler.queue.jobs import reconcile
from storage.models import utcnow

# Keep the point only while the generation marker is there: a flush during a pass must not leave
# a point behind that would make the next pass skip the jobs the flush took away.
_SAVE_MARK = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SET', KEYS[2], ARGV[1])
return 1
"""


class Reconciler:
    def __init__(self, sessions: sessionmaker[Session], index: WaitingIndex, *,
                 lookback_s: float = 120.0, full_every_s: float = 600.0) -> None:
        self.sessions = sessions
        self.index = index
        self.lookback_s = lookback_s
        self.full_every_s = full_every_s
        self.full_wanted = True
        self.last_full = float("-inf")  # time.monotonic() of the last full pass
        self.last_full_pass = False  # whether the last pass read everything
        self._save = index.redis.register_script(_SAVE_MARK)

    def request_full(self) -> None:
        """The next pass reads every queued job."""
        self.full_wanted = True

    def mark(self) -> datetime | None:
        """Where the next incremental pass starts reading (None: no pass recorded one)."""
        raw = self.index.redis.get(keys.RECONCILE_MARK)
        if raw is None:
            return None
        try:
            return datetime.fromtimestamp(float(raw), UTC)
        except ValueError:
            return None

    def run_pass(self) -> int:
        """One pass; returns how many queued jobs it put back in the index."""
        started = utcnow()
        since = self.mark()
        full = (self.full_wanted or since is None
                or time.monotonic() - self.last_full >= self.full_every_s)
        self.full_wanted = False  # a request made during the pass asks for the next one
        try:
            healed = reconcile(self.sessions, self.index, since=None if full else since)
        except BaseException:
            self.full_wanted = self.full_wanted or full
            raise
        point = started - timedelta(seconds=self.lookback_s)
        self._save(keys=[keys.GENERATION, keys.RECONCILE_MARK], args=[repr(point.timestamp())])
        if full:
            self.last_full = time.monotonic()
        self.last_full_pass = full
        return healed
