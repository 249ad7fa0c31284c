"""A served run: requests in, calibrated probabilities out, through the model's own code.

`ServedModel` turns a validated `RankRequest` into a `Feed` (vocabulary ids, int64 seconds,
local-time offsets), pads any number of feeds into one batch, and scores it with
`model.scoring.candidate_logits` followed by the run's post-hoc calibration, the same steps
`rotorec evaluate` takes. Unknown ids map to OOV and are counted, never an error; what the
model cannot read (an undeclared feature, an unknown task or action) is a `FeedError` naming
the field, which the app turns into a 422.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from features.localtime import resolve_offsets
from features.schema import LogSchema
from features.sequences import action_name
from features.timestamps import NO_OFFSET
from features.vocab import OOV, PAD, Vocabulary
from model.inputs import Events
from model.recurrent import RecurrentCache
from model.scoring import candidate_logits, encode_history
from service.errors import FeedError
from service.limits import at_most
from service.schemas import CandidateItem, HistoryEvent, RankRequest, parse_time
from training.run import LoadedRun, load_run


@dataclass
class Feed:
    """One request in model ids, ready to be padded into a batch."""

    history_items: np.ndarray  # int64 [L]
    history_actions: np.ndarray  # int64 [L]
    history_seconds: np.ndarray  # int64 [L]
    history_offsets: np.ndarray  # int16 [L]
    history_impressions: np.ndarray  # int64 [L], 0 = none
    history_categorical: dict[str, np.ndarray]  # int64 [L, max_values]
    candidate_items: np.ndarray  # int64 [C]
    candidate_categorical: dict[str, np.ndarray]  # int64 [C, max_values]
    request_time: int
    tz_offset_minutes: int
    oov: dict[str, int] = field(default_factory=dict)
    history_truncated: int = 0
    cached: UserState | None = None  # a per-user state holding this history's first events

    def fingerprints(self, previous: str = "") -> list[str]:
        """Chained digests of the history's model inputs, d_k = H(d_{k−1}, event k): entry k
        identifies events [0, k]; `previous` continues the chain of events already cached."""
        out = []
        for k in range(len(self.history_items)):
            parts = [self.history_items[k], self.history_actions[k], self.history_seconds[k], self.history_offsets[k],
                     self.history_impressions[k], *(v[k].tolist() for v in self.history_categorical.values())]
            previous = hashlib.blake2b(f"{previous}|{parts!r}".encode(), digest_size=16).hexdigest()
            out.append(previous)
        return out

    def history_after(self, start: int) -> Feed:
        """The same feed without its first `start` history events (they are in a cached state)."""
        cut = lambda x: x[start:]  # noqa: E731
        return replace(self, history_items=cut(self.history_items), history_actions=cut(self.history_actions),
                       history_seconds=cut(self.history_seconds), history_offsets=cut(self.history_offsets),
                       history_impressions=cut(self.history_impressions),
                       history_categorical={k: cut(v) for k, v in self.history_categorical.items()})


@dataclass
class UserState:
    """A user's per-layer recurrent caches after `events` history events (docs/serving.md,
    "Per-user recurrent state")."""

    version: str
    caches: list[RecurrentCache]
    events: int
    last_seconds: int
    fingerprint: str

    @property
    def nbytes(self) -> int:
        return sum(cache.nbytes for cache in self.caches)


@dataclass
class Scored:
    probabilities: np.ndarray  # [C, tasks], calibrated
    state: UserState | None  # the user's state after this feed's history (recurrent models)


class ServedModel:
    def __init__(self, run: LoadedRun) -> None:
        self.run = run
        self.model = run.model
        self.device = next(run.model.parameters()).device
        schema = run.schema
        self.tasks = list(run.model.config.tasks)
        self.max_len = run.model.config.max_seq_len
        self.actions = {name: 2 + k for k, name in enumerate(schema.actions)}
        vocab = run.folder / "vocab"
        self.items = Vocabulary.load(vocab, "item")
        self.categories = {name: Vocabulary.load(vocab, name) for name in schema.categorical}
        self.max_values = {name: info.max_values for name, info in schema.categorical.items()}
        self.item_level = self._item_level_categories(run.folder, schema)
        log_schema = LogSchema.model_validate(schema.log_schema)
        self.fixed_offset, self.default_zone = log_schema.fixed_offset_minutes(), log_schema.default_timezone

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device) -> ServedModel:
        return cls(load_run(folder, device))

    @property
    def name(self) -> str:
        return str(self.run.manifest.get("name", "rotorec"))

    @property
    def version(self) -> str:
        return str(self.run.manifest.get("version", "unknown"))

    @property
    def fingerprint(self) -> str:
        return self.run.schema.fingerprint()

    def _item_level_categories(self, folder: Path, schema) -> dict[str, np.ndarray]:
        """Item id -> category ids for item-level fields (used when a request omits them)."""
        fields = [name for name, info in schema.categorical.items() if info.level == "item"]
        if not fields or not (folder / "items.parquet").is_file():
            return {}
        table = pq.read_table(folder / "items.parquet")
        out = {}
        for name in fields:
            values = np.zeros((self.items.size, self.max_values[name]), dtype=np.int64)
            for row, ids in zip(table["id"].to_numpy(), table[f"cat_{name}"].to_pylist()):
                ids = (ids or [])[: self.max_values[name]]
                values[row, : len(ids)] = ids
            out[name] = values
        return out

    # -- requests -> feeds ----------------------------------------------------------------------

    def feed(self, request: RankRequest, max_history: int) -> Feed:
        at_most(len(request.history), max_history, ("body", "history"), "history events")
        for task in request.tasks or []:
            if task not in self.tasks:
                raise FeedError(("body", "tasks"), f"unknown task {task!r} (model tasks: {self.tasks})", task)
        for task in request.blend or {}:
            if task not in (request.tasks or self.tasks):
                raise FeedError(("body", "blend", task), f"blend weight for a task that is not scored: {task!r}", task)
        oov = {"history_items": 0, "candidate_items": 0, "feature_values": 0}
        request_time, request_offset = parse_time(request.request_time)
        zone = self._request_offset(request.tz_offset_minutes, request_offset, request_time)
        times = [parse_time(event.timestamp) for event in request.history]
        order = sorted(range(len(times)), key=lambda k: times[k][0])  # stable: ties keep request order
        truncated = self._excess(len(order))
        order = order[truncated:]
        events = [request.history[k] for k in order]
        seconds = np.array([times[k][0] for k in order], dtype=np.int64)
        offsets = np.array([zone if times[k][1] is None else times[k][1] for k in order], dtype=np.int16)
        items = self._ids(self.items, [e.item_id for e in events], oov, "history_items")
        candidate_items = self._ids(self.items, [c.item_id for c in request.candidates], oov, "candidate_items")
        return Feed(
            history_items=items, history_actions=self._actions(events, order),
            history_seconds=seconds, history_offsets=offsets, history_impressions=self._impressions(events),
            history_categorical=self._categorical(events, items, ("body", "history"), order, oov),
            candidate_items=candidate_items,
            candidate_categorical=self._categorical(request.candidates, candidate_items, ("body", "candidates"),
                                                    list(range(len(request.candidates))), oov),
            request_time=request_time, tz_offset_minutes=zone, oov=oov, history_truncated=truncated)

    def events_feed(self, events: list[HistoryEvent], max_history: int) -> Feed:
        """New events of one user (`/v1/events`) as a feed with no candidates."""
        last = max(parse_time(event.timestamp)[0] for event in events)
        request = RankRequest.model_construct(user_id="-", request_time=last, tz_offset_minutes=None, history=events,
                                              candidates=[], tasks=None, top_k=None, blend=None)
        try:
            return self.feed(request, max_history)
        except FeedError as error:  # the events sit under "events" in that body, not "history"
            raise FeedError(("body", "events", *error.loc[2:]), error.message, error.value) from None

    def feed_from_ids(self, history_items: np.ndarray, history_actions: np.ndarray, history_seconds: np.ndarray,
                      history_categorical: dict[str, np.ndarray], candidate_items: np.ndarray,
                      candidate_categorical: dict[str, np.ndarray], request_time: int) -> Feed:
        """A feed from vocabulary ids (the inference protocol); times in the model's default zone."""
        order = np.argsort(history_seconds, kind="stable")
        truncated = self._excess(len(order))
        order = order[truncated:]
        zone = self._request_offset(None, None, request_time)
        items = history_items[order]

        def categories(given: dict[str, np.ndarray], ids: np.ndarray, rows: np.ndarray | None) -> dict[str, np.ndarray]:
            out = {}
            for name in self.categories:
                values = (self.item_level[name][ids] if name in self.item_level
                          else np.zeros((len(ids), self.max_values[name]), dtype=np.int64)).copy()
                if name in given:
                    values[:] = 0
                    values[:, 0] = given[name] if rows is None else given[name][rows]
                out[name] = values
            return out

        return Feed(history_items=items, history_actions=history_actions[order], history_seconds=history_seconds[order],
                    history_offsets=np.full(len(order), zone, dtype=np.int16),
                    history_impressions=np.zeros(len(order), dtype=np.int64),
                    history_categorical=categories(history_categorical, items, order),
                    candidate_items=candidate_items, candidate_categorical=categories(candidate_categorical, candidate_items, None),
                    request_time=int(request_time), tz_offset_minutes=zone,
                    oov={"history_items": int((items == OOV).sum()), "candidate_items": int((candidate_items == OOV).sum()),
                         "feature_values": 0},
                    history_truncated=truncated)

    @property
    def streams(self) -> bool:
        return self.model.streams

    def _excess(self, events: int) -> int:
        """History events beyond the model's length are cut, except for recurrent models, whose
        state carries any length (and a cached state must equal a re-encoded one)."""
        return 0 if self.streams else max(0, events - self.max_len)

    def _request_offset(self, explicit: int | None, iso: int | None, request_time: int) -> int:
        """Request's local offset: tz_offset_minutes, else the ISO offset, else the model default."""
        if explicit is not None:
            return explicit
        if iso is not None:
            return iso
        default = resolve_offsets(np.array([request_time]), np.array([True]), np.array([NO_OFFSET], dtype=np.int16),
                                  self.fixed_offset, self.default_zone)
        return int(default[0])

    @staticmethod
    def _ids(vocabulary: Vocabulary, keys: list, oov: dict[str, int], counter: str) -> np.ndarray:
        ids = vocabulary.lookup([str(k) for k in keys]) if keys else np.zeros(0, dtype=np.int64)
        oov[counter] += int((ids == OOV).sum())
        return ids

    def _actions(self, events: list[HistoryEvent], order: list[int]) -> np.ndarray:
        ids = np.zeros(len(events), dtype=np.int64)
        for position, (event, original) in enumerate(zip(events, order)):
            if event.action is not None:
                if event.action not in self.actions:
                    raise FeedError(("body", "history", original, "action"),
                                    f"unknown action {event.action!r} (model actions: {sorted(self.actions)})", event.action)
                ids[position] = self.actions[event.action]
                continue
            unknown = set(event.labels) - set(self.tasks)
            if unknown:
                raise FeedError(("body", "history", original, "labels"), f"unknown task(s) {sorted(unknown)}", sorted(unknown))
            mask = sum(1 << k for k, task in enumerate(self.tasks) if event.labels.get(task, 0) == 1)
            ids[position] = self.actions.get(action_name(mask, self.tasks), OOV)
        return ids

    @staticmethod
    def _impressions(events: list[HistoryEvent]) -> np.ndarray:
        """Dense run numbers for the events' impression ids (0 = none), as prepare numbers them."""
        numbers: dict[str, int] = {}
        out = np.zeros(len(events), dtype=np.int64)
        for k, event in enumerate(events):
            if event.impression_id is not None:
                out[k] = numbers.setdefault(str(event.impression_id), len(numbers) + 1)
        return out

    def _categorical(self, rows: list[CandidateItem], items: np.ndarray, where: tuple, original: list[int],
                     oov: dict[str, int]) -> dict[str, np.ndarray]:
        out = {}
        for name, vocabulary in self.categories.items():
            width = self.max_values[name]
            values = (self.item_level[name][items] if name in self.item_level
                      else np.zeros((len(rows), width), dtype=np.int64)).copy()
            for position, row in enumerate(rows):
                given = row.features.get(name)
                if given is None:
                    continue
                keys = [str(v) for v in (given if isinstance(given, list) else [given])][:width]
                ids = vocabulary.lookup(keys) if keys else np.zeros(0, dtype=np.int64)
                oov["feature_values"] += int((ids == OOV).sum())
                values[position] = PAD
                values[position, : len(ids)] = ids
            out[name] = values
        for position, row in enumerate(rows):
            undeclared = set(row.features) - set(self.categories)
            if undeclared:
                name = sorted(undeclared)[0]
                raise FeedError((*where, original[position], "features", name),
                                f"feature {name!r} is not declared by the model (declared: {sorted(self.categories)})", name)
        return out

    # -- feeds -> probabilities ---------------------------------------------------------------

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
        return [Scored(probabilities[row, : len(feed.candidate_items)], self._state_after(feed, encoded, row, caches))
                for row, feed in enumerate(feeds)]

    def advance(self, state: UserState | None, feed: Feed) -> UserState:
        """Read a user's new events into their state: one recurrent step per event and layer."""
        start = None if state is None or state.version != self.version else state
        (feed,), caches = self._continue_from_states([replace(feed, cached=start)], new_events_only=True)
        history = self._pad([feed], history=True)
        with torch.inference_mode():
            encoded = encode_history(self.model, history, caches)
        return self._state_after(feed, encoded, 0, caches)

    def _continue_from_states(self, feeds: list[Feed], new_events_only: bool = False
                              ) -> tuple[list[Feed], list[RecurrentCache] | None]:
        """Per-layer caches for a batch of feeds; a feed whose whole history was sent keeps only
        the events after its cached state (`new_events_only`: the feed holds just those)."""
        if not self.streams:
            return feeds, None
        usable = [f.cached is not None and f.cached.version == self.version for f in feeds]
        feeds = [(f if new_events_only else f.history_after(f.cached.events)) if ok else replace(f, cached=None)
                 for f, ok in zip(feeds, usable)]
        caches = [RecurrentCache.stack([f.cached.caches[layer] if f.cached is not None
                                        else block.mixer.empty_cache(1, self.device) for f in feeds])
                  for layer, block in enumerate(self.model.blocks)]
        return feeds, caches

    def _state_after(self, feed: Feed, encoded, row: int, caches) -> UserState | None:
        if caches is None:
            return None
        before = feed.cached
        events = (before.events if before else 0) + len(feed.history_items)
        digests = feed.fingerprints(before.fingerprint if before else "")
        fingerprint = digests[-1] if digests else (before.fingerprint if before else "")
        last = int(feed.history_seconds[-1]) if len(feed.history_seconds) else (before.last_seconds if before else 0)
        return UserState(version=self.version, caches=[layer.row(row) for layer in encoded.layers], events=events,
                         last_seconds=last, fingerprint=fingerprint)

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
            return Events(item=stack(lambda f: f.candidate_items), valid=valid,
                          categorical={n: stack(lambda f, n=n: f.candidate_categorical[n], trailing=(self.max_values[n],))
                                       for n in self.categories})
        return Events(
            item=stack(lambda f: f.history_items), valid=valid,
            categorical={n: stack(lambda f, n=n: f.history_categorical[n], trailing=(self.max_values[n],))
                         for n in self.categories},
            action=stack(lambda f: f.history_actions), timestamp=stack(lambda f: f.history_seconds),
            has_time=valid.clone(), tz_offset_minutes=stack(lambda f: f.history_offsets),
            impression=stack(lambda f: f.history_impressions))
