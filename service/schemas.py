"""Request and response bodies of the typed API (docs/serving.md, "Typed API"), validated by pydantic v2.

Every model forbids unknown keys; floats reject NaN and infinities. Numbers are strict: JSON
`true` is not 1 and `"5"` is not 5, wherever a time, id or count is expected. Text that is not
valid Unicode (a lone surrogate from a JSON escape) is refused by pydantic itself; the 422 that
echoes it is rendered safely by service/errors.py. Times are Unix seconds (before 2100, so
milliseconds are refused) or ISO-8601 strings with an explicit offset; both become int64 UTC
seconds, and an ISO offset is kept as the event's local-time offset.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, StringConstraints, model_validator

from rotorec.features.strict import StrictModel

LATEST_SECOND = 4_102_444_800  # 2100-01-01
MAX_TEXT = 128
MAX_FEATURES = 32
FUTURE_SLACK_SECONDS = 300

Text = Annotated[StrictStr, StringConstraints(min_length=1, max_length=MAX_TEXT)]
Int64 = Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)]  # ids travel as int64 (and JSON encoders agree)
FeatureValue = Int64 | Text | list[Int64 | Text]


class Strict(StrictModel):
    """Unknown keys refused (StrictModel), and no NaN or infinity in any float."""

    model_config = ConfigDict(allow_inf_nan=False)


def parse_time(value: int | float | str) -> tuple[int, int | None]:
    """(UTC seconds, ISO offset in minutes or None) from a request's time value."""
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("not an ISO-8601 time") from None
        if moment.tzinfo is None:
            raise ValueError("an ISO-8601 time needs an explicit offset (Z or ±hh:mm)")
        seconds, offset = int(moment.timestamp() // 1), int(moment.utcoffset().total_seconds() // 60)
    else:
        seconds, offset = int(value // 1), None
    if not 0 <= seconds < LATEST_SECOND:
        raise ValueError(f"time must be Unix seconds in [0, {LATEST_SECOND}) (milliseconds are not accepted)")
    return seconds, offset


def _checked_time(value: int | float | str) -> int | float | str:
    parse_time(value)
    return value


def latest_history_second(request_second: int) -> int:
    """History events may be at most this late (clock skew between client and event source)."""
    return request_second + FUTURE_SLACK_SECONDS


TimeValue = Annotated[
    StrictInt | StrictFloat | Text, AfterValidator(_checked_time), Field(description="Unix seconds or ISO-8601 with an offset")
]


class CandidateItem(Strict):
    item_id: Int64 | Text
    features: dict[Text, FeatureValue] = Field(default_factory=dict, max_length=MAX_FEATURES)


class HistoryEvent(CandidateItem):
    timestamp: TimeValue
    impression_id: Int64 | Text | None = Field(None, description="events of one shown slate share an id")
    action: Text | None = None
    labels: dict[Text, Annotated[StrictInt, Field(ge=0, le=1)]] | None = None

    @model_validator(mode="after")
    def _one_outcome(self) -> HistoryEvent:
        if (self.action is None) == (self.labels is None):
            raise ValueError("give exactly one of 'action' or 'labels'")
        return self


class RankRequest(Strict):
    user_id: Text
    request_time: TimeValue
    tz_offset_minutes: StrictInt | None = Field(None, ge=-840, le=840)
    history: list[HistoryEvent] = Field(default_factory=list)
    candidates: list[CandidateItem] = Field(min_length=1)
    tasks: list[Text] | None = None
    top_k: StrictInt | None = Field(None, ge=1)
    blend: dict[Text, Annotated[StrictFloat, Field(ge=0)]] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> RankRequest:
        request_second, _ = parse_time(self.request_time)
        for k, event in enumerate(self.history):
            if parse_time(event.timestamp)[0] > latest_history_second(request_second):
                raise ValueError(f"history[{k}].timestamp is after request_time")
        if self.top_k is not None and self.top_k > len(self.candidates):
            raise ValueError(f"top_k {self.top_k} exceeds the {len(self.candidates)} candidates")
        return self


class ModelName(Strict):
    name: str
    version: str


class CandidateScore(Strict):
    index: int
    item_id: int | str
    probabilities: dict[str, float]
    score: float


class OovCounts(Strict):
    history_items: int = 0
    candidate_items: int = 0
    feature_values: int = 0


class RankResponse(Strict):
    model: ModelName
    request_time: int
    scores: list[CandidateScore]
    ranking: list[int]
    oov: OovCounts
    history_truncated: int


class ReloadRequest(Strict):
    run: Annotated[StrictStr, StringConstraints(min_length=1, max_length=4096)] = Field(
        description="a run folder inside the server's runs root (absolute, or relative to the root)"
    )
    expect_version: Text | None = Field(None, description="refuse the run unless its manifest has this version")


class EventsRequest(Strict):
    """New events of one user, appended to their cached recurrent state (`POST /v1/events`)."""

    user_id: Text
    events: list[HistoryEvent] = Field(min_length=1)
