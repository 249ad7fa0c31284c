"""Requests in model ids: what a run's model reads, built with the run's own vocabularies.

A `Featurizer` turns a validated `RankRequest` (or `/v1/events` events, or v2 id tensors) into a
`Feed`: vocabulary ids, int64 UTC seconds, local-time offsets and impression numbers, numbered as
`rotorec prepare` numbers them (features/), so a served history reads exactly as a prepared
one. Unknown ids map to OOV and are counted, never an error; what the model cannot read (an
undeclared feature, an unknown task or action) is a `FeedError` naming the field, which the app
turns into a 422.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from rotorec.features.artifacts import FeatureSchema
from rotorec.features.localtime import resolve_offsets
from rotorec.features.schema import LogSchema
from rotorec.features.sequences import action_name, number_impressions
from rotorec.features.timestamps import NO_OFFSET
from rotorec.features.vocab import OOV, PAD, RESERVED, Vocabulary
from rotorec.service.errors import FeedError
from rotorec.service.limits import at_most
from rotorec.service.schemas import CandidateItem, HistoryEvent, RankRequest, parse_time
from rotorec.service.user_state import UserState
from rotorec.training.run import LoadedRun


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
            parts = [
                self.history_items[k],
                self.history_actions[k],
                self.history_seconds[k],
                self.history_offsets[k],
                self.history_impressions[k],
                *(v[k].tolist() for v in self.history_categorical.values()),
            ]
            previous = hashlib.blake2b(f"{previous}|{parts!r}".encode(), digest_size=16).hexdigest()
            out.append(previous)
        return out

    def history_after(self, start: int) -> Feed:
        """The same feed without its first `start` history events (they are in a cached state)."""
        cut = lambda x: x[start:]  # noqa: E731
        return replace(
            self,
            history_items=cut(self.history_items),
            history_actions=cut(self.history_actions),
            history_seconds=cut(self.history_seconds),
            history_offsets=cut(self.history_offsets),
            history_impressions=cut(self.history_impressions),
            history_categorical={k: cut(v) for k, v in self.history_categorical.items()},
        )


class Featurizer:
    """One run's vocabularies, actions, item table and default zone: everything that gives a
    request's fields their meaning for that run's model, and nothing that runs the model."""

    def __init__(self, run: LoadedRun) -> None:
        schema = run.schema
        self.tasks = list(run.model.config.tasks)
        self.max_len = run.model.config.max_seq_len
        self.streams = run.model.streams
        self.action_vocab_size = schema.action_vocab_size
        self.actions = {name: RESERVED + k for k, name in enumerate(schema.actions)}
        vocab = run.folder / "vocab"
        self.items = Vocabulary.load(vocab, "item")
        self.categories = {name: Vocabulary.load(vocab, name) for name in schema.categorical}
        self.max_values = {name: info.max_values for name, info in schema.categorical.items()}
        self.item_level = self._item_level_categories(run.folder, schema)
        log_schema = LogSchema.model_validate(schema.log_schema)
        self.fixed_offset, self.default_zone = log_schema.fixed_offset_minutes(), log_schema.default_timezone

    def _item_level_categories(self, folder: Path, schema: FeatureSchema) -> dict[str, np.ndarray]:
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
            history_items=items,
            history_actions=self._actions(events, order),
            history_seconds=seconds,
            history_offsets=offsets,
            history_impressions=_impressions(events),
            history_categorical=self._categorical(events, items, ("body", "history"), order, oov),
            candidate_items=candidate_items,
            candidate_categorical=self._categorical(
                request.candidates, candidate_items, ("body", "candidates"), list(range(len(request.candidates))), oov
            ),
            request_time=request_time,
            tz_offset_minutes=zone,
            oov=oov,
            history_truncated=truncated,
        )

    def events_feed(self, events: list[HistoryEvent], max_history: int) -> Feed:
        """New events of one user (`/v1/events`) as a feed with no candidates."""
        last = max(parse_time(event.timestamp)[0] for event in events)
        request = RankRequest.model_construct(
            user_id="-", request_time=last, tz_offset_minutes=None, history=events, candidates=[], tasks=None, top_k=None, blend=None
        )
        try:
            return self.feed(request, max_history)
        except FeedError as error:  # the events sit under "events" in that body, not "history"
            raise FeedError(("body", "events", *error.loc[2:]), error.message, error.value) from None

    def feed_from_ids(
        self,
        history_items: np.ndarray,
        history_actions: np.ndarray,
        history_seconds: np.ndarray,
        history_categorical: dict[str, np.ndarray],
        candidate_items: np.ndarray,
        candidate_categorical: dict[str, np.ndarray],
        request_time: int,
    ) -> Feed:
        """A feed from vocabulary ids (the inference protocol); times in the model's default zone."""
        order = np.argsort(history_seconds, kind="stable")
        truncated = self._excess(len(order))
        order = order[truncated:]
        zone = self._request_offset(None, None, request_time)
        items = history_items[order]

        def categories(given: dict[str, np.ndarray], ids: np.ndarray, rows: np.ndarray | None) -> dict[str, np.ndarray]:
            out = {}
            for name in self.categories:
                values = (
                    self.item_level[name][ids] if name in self.item_level else np.zeros((len(ids), self.max_values[name]), dtype=np.int64)
                ).copy()
                if name in given:
                    values[:] = PAD
                    values[:, 0] = given[name] if rows is None else given[name][rows]
                out[name] = values
            return out

        return Feed(
            history_items=items,
            history_actions=history_actions[order],
            history_seconds=history_seconds[order],
            history_offsets=np.full(len(order), zone, dtype=np.int16),
            history_impressions=np.zeros(len(order), dtype=np.int64),
            history_categorical=categories(history_categorical, items, order),
            candidate_items=candidate_items,
            candidate_categorical=categories(candidate_categorical, candidate_items, None),
            request_time=int(request_time),
            tz_offset_minutes=zone,
            oov={"history_items": int((items == OOV).sum()), "candidate_items": int((candidate_items == OOV).sum()), "feature_values": 0},
            history_truncated=truncated,
        )

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
        default = resolve_offsets(
            np.array([request_time]), np.array([True]), np.array([NO_OFFSET], dtype=np.int16), self.fixed_offset, self.default_zone
        )
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
                    raise FeedError(
                        ("body", "history", original, "action"),
                        f"unknown action {event.action!r} (model actions: {sorted(self.actions)})",
                        event.action,
                    )
                ids[position] = self.actions[event.action]
                continue
            unknown = set(event.labels) - set(self.tasks)
            if unknown:
                raise FeedError(("body", "history", original, "labels"), f"unknown task(s) {sorted(unknown)}", sorted(unknown))
            mask = sum(1 << k for k, task in enumerate(self.tasks) if event.labels.get(task, 0) == 1)
            ids[position] = self.actions.get(action_name(mask, self.tasks), OOV)
        return ids

    def _categorical(
        self, rows: list[CandidateItem], items: np.ndarray, where: tuple, original: list[int], oov: dict[str, int]
    ) -> dict[str, np.ndarray]:
        out = {}
        for name, vocabulary in self.categories.items():
            width = self.max_values[name]
            values = (self.item_level[name][items] if name in self.item_level else np.zeros((len(rows), width), dtype=np.int64)).copy()
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
                raise FeedError(
                    (*where, original[position], "features", name),
                    f"feature {name!r} is not declared by the model (declared: {sorted(self.categories)})",
                    name,
                )
        return out


def _impressions(events: list[HistoryEvent]) -> np.ndarray:
    """Impression numbers of one user's time-ordered events, as prepare numbers them; ids are
    compared as text, so 7 and "7" are one impression."""
    has = np.array([event.impression_id is not None for event in events], dtype=bool)
    keys = np.unique([str(event.impression_id) for event in events], return_inverse=True)[1].astype(np.int64)
    return number_impressions(np.zeros(len(events), dtype=np.int64), keys, has)
