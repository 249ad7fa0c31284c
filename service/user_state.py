"""What the service keeps of a user between requests (docs/serving.md, "Per-user recurrent
state"): the per-layer recurrent caches after the events read so far, and the digest that proves
which events those were. A state is a value: `service/scoring.py` makes one from a forward pass,
`service/state_cache.py` keeps it, a feed (`Feed.cached`) continues from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from rotorec.model.recurrent import RecurrentCache


@dataclass
class UserState:
    version: str  # the model version that wrote the caches: no other version may read them
    caches: list[RecurrentCache]
    events: int
    last_seconds: int  # the last event's time: an older event cannot be appended
    fingerprint: str  # the chained digest of the `events` events (`Feed.fingerprints`)

    @property
    def nbytes(self) -> int:
        return sum(cache.nbytes for cache in self.caches)
