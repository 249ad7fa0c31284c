"""Per-user recurrent state (docs/serving.md, "Per-user recurrent state"): key (model version, user id) → UserState.

An LRU bounded by entries and bytes, with a time to live, per replica. A request stays
authoritative: its history is used from the cache only when the cached state's fingerprint
equals the digest of the request's own first events; otherwise the history is re-encoded and
the entry refreshed. Correctness never depends on a hit.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from rotorec.service.featurize import Feed
from rotorec.service.metrics import ServiceMetrics
from rotorec.service.user_state import UserState


class StateCache:
    def __init__(self, max_entries: int, max_bytes: int, ttl_s: float, metrics: ServiceMetrics) -> None:
        self.max_entries, self.max_bytes, self.ttl_s = max_entries, max_bytes, ttl_s
        self.metrics = metrics
        self.entries: OrderedDict[tuple[str, str], tuple[UserState, float]] = OrderedDict()
        self.bytes = 0
        self.lock = threading.Lock()

    def get(self, version: str, user: str) -> UserState | None:
        with self.lock:
            found = self.entries.get((version, user))
            if found is None:
                return None
            state, stored = found
            if time.monotonic() - stored > self.ttl_s:
                self._remove((version, user))
                return None
            self.entries.move_to_end((version, user))
            return state

    def lookup(self, version: str, user: str, feed: Feed) -> UserState | None:
        """The user's state if it holds exactly the first events of this feed's history."""
        state = self.get(version, user)
        if state is None:
            self.metrics.state_lookups.labels(result="miss").inc()
            return None
        digests = feed.fingerprints()
        if 0 < state.events <= len(digests) and digests[state.events - 1] == state.fingerprint:
            self.metrics.state_lookups.labels(result="hit").inc()
            return state
        self.metrics.state_lookups.labels(result="stale").inc()
        self.drop(version, user)
        return None

    def store(self, user: str, state: UserState) -> None:
        with self.lock:
            key = (state.version, user)
            if key in self.entries:
                self._remove(key)
            self.entries[key] = (state, time.monotonic())
            self.bytes += state.nbytes
            while self.entries and (len(self.entries) > self.max_entries or self.bytes > self.max_bytes):
                self._remove(next(iter(self.entries)))
            self._report()

    def drop(self, version: str, user: str) -> None:
        with self.lock:
            if (version, user) in self.entries:
                self._remove((version, user))
            self._report()

    def _remove(self, key: tuple[str, str]) -> None:
        state, _ = self.entries.pop(key)
        self.bytes -= state.nbytes

    def _report(self) -> None:
        self.metrics.state_entries.set(len(self.entries))
        self.metrics.state_bytes.set(self.bytes)
