"""Feeds in, calibrated probabilities out, through the model's own code.

`ServedModel` is one loaded run as the service holds it: its featurizer (service/featurize.py)
and its weights. It pads any number of feeds into one batch and scores it with
`model.scoring.candidate_logits` followed by the run's post-hoc calibration, the same steps
`rotorec evaluate` takes, so served and evaluated probabilities agree. Recurrent models continue
each feed from its user's cached state (service/user_state.py) and hand back the new state.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from rotorec.model.inputs import Events
from rotorec.model.recurrent import RecurrentCache
from rotorec.model.ranker import History
from rotorec.model.scoring import candidate_logits, encode_history
from rotorec.service.featurize import Featurizer, Feed
from rotorec.service.user_state import UserState
from rotorec.training.run import LoadedRun, load_run


@dataclass
class Scored:
    probabilities: np.ndarray  # [C, tasks], calibrated
    state: UserState | None  # the user's state after this feed's history (recurrent models)


class ServedModel(Featurizer):
    """A run's featurizer together with its model: a snapshot that featurizes a request and
    scores it, so ids are never read by another run's weights."""

    def __init__(self, run: LoadedRun) -> None:
        super().__init__(run)
        self.run = run
        self.model = run.model
        self.device = next(run.model.parameters()).device

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device) -> ServedModel:
        return cls(load_run(folder, device))

    @property
    def name(self) -> str:
        return str(self.run.manifest.get("name", "rotorec"))

    @property
    def version(self) -> str:
        return str(self.run.manifest.get("version", "unknown"))

    def score(self, feeds: list[Feed], micro_batch: int = 256) -> list[Scored]:
        """Calibrated probabilities [C, tasks] per feed, for any number of feeds in one pass.

        Recurrent models continue each feed from its cached state when it was made by this
        model version (otherwise they re-encode the whole history) and return the new state."""
        feeds, caches = self._continue_from_states(feeds)
        history, candidates = self._pad(feeds, history=True), self._pad(feeds, history=False)
        request_time = torch.tensor([f.request_time for f in feeds], dtype=torch.long, device=self.device)
        zones = torch.tensor([f.tz_offset_minutes for f in feeds], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            logits, encoded = candidate_logits(self.model, history, candidates, request_time, zones, micro_batch, caches)
            logits = logits.float()
            calibrated = torch.stack([self.run.calibrated(task, logits[..., k]) for k, task in enumerate(self.tasks)], -1)
            probabilities = torch.sigmoid(calibrated).cpu().numpy()
        return [
            Scored(probabilities[row, : len(feed.candidate_items)], self._state_after(feed, encoded, row, caches))
            for row, feed in enumerate(feeds)
        ]

    def advance(self, state: UserState | None, feed: Feed) -> UserState:
        """Read a user's new events into their state: one recurrent step per event and layer."""
        start = None if state is None or state.version != self.version else state
        (feed,), caches = self._continue_from_states([replace(feed, cached=start)], new_events_only=True)
        history = self._pad([feed], history=True)
        with torch.inference_mode():
            encoded = encode_history(self.model, history, caches)
        return self._state_after(feed, encoded, 0, caches)

    def _continue_from_states(self, feeds: list[Feed], new_events_only: bool = False) -> tuple[list[Feed], list[RecurrentCache] | None]:
        """Per-layer caches for a batch of feeds; a feed whose whole history was sent keeps only
        the events after its cached state (`new_events_only`: the feed holds just those)."""
        if not self.streams:
            return feeds, None
        usable = [f.cached is not None and f.cached.version == self.version for f in feeds]
        feeds = [
            (f if new_events_only else f.history_after(f.cached.events)) if ok else replace(f, cached=None) for f, ok in zip(feeds, usable)
        ]
        caches = [
            RecurrentCache.stack(
                [f.cached.caches[layer] if f.cached is not None else block.mixer.empty_cache(1, self.device) for f in feeds]
            )
            for layer, block in enumerate(self.model.blocks)
        ]
        return feeds, caches

    def _state_after(self, feed: Feed, encoded: History, row: int, caches: list[RecurrentCache] | None) -> UserState | None:
        if caches is None:
            return None
        before = feed.cached
        events = (before.events if before else 0) + len(feed.history_items)
        digests = feed.fingerprints(before.fingerprint if before else "")
        fingerprint = digests[-1] if digests else (before.fingerprint if before else "")
        last = int(feed.history_seconds[-1]) if len(feed.history_seconds) else (before.last_seconds if before else 0)
        return UserState(
            version=self.version,
            caches=[layer.row(row) for layer in encoded.layers],
            events=events,
            last_seconds=last,
            fingerprint=fingerprint,
        )

    def _pad(self, feeds: list[Feed], history: bool) -> Events:
        lengths = [len(f.history_items if history else f.candidate_items) for f in feeds]
        width = max(max(lengths), 1)

        def stack(get, dtype=torch.long, trailing=()):
            out = np.zeros((len(feeds), width, *trailing), dtype=np.int64)
            for row, feed in enumerate(feeds):
                values = get(feed)
                out[row, : len(values)] = values
            return torch.from_numpy(out).to(device=self.device, dtype=dtype)

        valid = torch.tensor([[k < n for k in range(width)] for n in lengths], device=self.device)
        if not history:
            return Events(
                item=stack(lambda f: f.candidate_items),
                valid=valid,
                categorical={n: stack(lambda f, n=n: f.candidate_categorical[n], trailing=(self.max_values[n],)) for n in self.categories},
            )
        return Events(
            item=stack(lambda f: f.history_items),
            valid=valid,
            categorical={n: stack(lambda f, n=n: f.history_categorical[n], trailing=(self.max_values[n],)) for n in self.categories},
            action=stack(lambda f: f.history_actions),
            timestamp=stack(lambda f: f.history_seconds),
            has_time=valid.clone(),
            tz_offset_minutes=stack(lambda f: f.history_offsets),
            impression=stack(lambda f: f.history_impressions),
        )
