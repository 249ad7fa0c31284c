"""KServe Open Inference Protocol v2 routes over the same batcher and model (docs/serving.md,
"Open Inference Protocol v2").

Tensors carry vocabulary ids (out of range → OOV), UTC seconds and lengths; `data` is the flat
row-major list. The output `probabilities` is FP32 [B, C, tasks], task order in the metadata,
0 in padded slots; for the same feed it equals what `/v1/rank` returns. The limits of /v1/rank
hold per request in total (candidates and history events summed over rows), history times may
not be later than the request time (+300 s), and all rows are queued, scored and answered as
one unit by the model snapshot that read them.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends
from pydantic import Field, StrictInt

from rotorec.features.vocab import OOV
from rotorec import __version__
from rotorec.service.dependencies import Model, State
from rotorec.service.errors import ApiError, FeedError, declared
from rotorec.service.featurize import Feed
from rotorec.service.limits import at_most
from rotorec.service.schemas import FUTURE_SLACK_SECONDS, LATEST_SECOND, Int64, Strict, Text, latest_history_second
from rotorec.service.scoring import ServedModel

MAX_DIMENSION = 2**31 - 1  # far beyond what a body under the size cap can fill; numpy refuses empty shapes near 2**63
REQUIRED = (
    "history_item_ids",
    "history_timestamps",
    "history_actions",
    "history_lengths",
    "candidate_item_ids",
    "candidate_lengths",
    "request_time",
)


class InferTensor(Strict):
    name: Text
    shape: list[Annotated[StrictInt, Field(ge=0, le=MAX_DIMENSION)]] = Field(min_length=1, max_length=2)
    datatype: Literal["INT64"]
    data: list[Int64]


class InferRequest(Strict):
    id: Text | None = None
    inputs: list[InferTensor] = Field(min_length=1, max_length=64)
    outputs: list[dict] | None = None
    parameters: dict | None = None


def _metadata(model: ServedModel) -> dict:
    dims = {"history": [-1, -1], "candidate": [-1, -1], "row": [-1]}
    inputs = [
        {"name": n, "datatype": "INT64", "shape": dims["row" if n.endswith(("lengths", "time")) else n.split("_")[0]]} for n in REQUIRED
    ]
    for field in model.categories:
        inputs += [
            {"name": f"history_cat_{field}", "datatype": "INT64", "shape": [-1, -1], "optional": True},
            {"name": f"candidate_cat_{field}", "datatype": "INT64", "shape": [-1, -1], "optional": True},
        ]
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": "pytorch",
        "inputs": inputs,
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, -1, len(model.tasks)]}],
        "parameters": {"tasks": model.tasks},
    }


def _tensors(body: InferRequest, model: ServedModel) -> dict[str, np.ndarray]:
    tensors = {}
    known = set(REQUIRED) | {f"{side}_cat_{f}" for f in model.categories for side in ("history", "candidate")}
    for k, tensor in enumerate(body.inputs):
        if tensor.name not in known:
            raise FeedError(("inputs", k, "name"), f"unknown input {tensor.name!r}")
        if math.prod(tensor.shape) != len(tensor.data):  # exact: numpy's product would wrap around
            raise FeedError(("inputs", k, "data"), f"{len(tensor.data)} values do not fill shape {tensor.shape}")
        tensors[tensor.name] = np.asarray(tensor.data, dtype=np.int64).reshape(tensor.shape)
    missing = [n for n in REQUIRED if n not in tensors]
    if missing:
        raise FeedError(("inputs",), f"missing inputs: {missing}")
    return tensors


def _feeds(tensors: dict[str, np.ndarray], model: ServedModel, max_history: int, max_candidates: int) -> list[Feed]:
    rows = _rows(tensors)
    lengths, counts, times = tensors["history_lengths"], tensors["candidate_lengths"], tensors["request_time"]
    _within(lengths, 0, tensors["history_item_ids"].shape[1], "history_lengths")
    _within(counts, 1, tensors["candidate_item_ids"].shape[1], "candidate_lengths")
    _within(times, 0, LATEST_SECOND - 1, "request_time", message="must be Unix seconds before 2100")
    at_most(int(lengths.sum()), max_history, ("inputs", "history_lengths"), "history events (summed over rows)")
    at_most(int(counts.sum()), max_candidates, ("inputs", "candidate_lengths"), "candidates (summed over rows)")
    feeds = []
    for b in range(rows):
        length, count, when = int(lengths[b]), int(counts[b]), int(times[b])
        seconds = tensors["history_timestamps"][b, :length]
        _within(
            seconds,
            0,
            min(latest_history_second(when), LATEST_SECOND - 1),
            "history_timestamps",
            b,
            message=f"must be Unix seconds before 2100 and at most {FUTURE_SLACK_SECONDS} s after the row's request_time",
        )
        feeds.append(
            model.feed_from_ids(
                history_items=_ids(tensors["history_item_ids"][b, :length], model.items.size),
                history_actions=_ids(tensors["history_actions"][b, :length], model.action_vocab_size),
                history_seconds=seconds,
                history_categorical={
                    f: _ids(tensors[f"history_cat_{f}"][b, :length], model.categories[f].size)
                    for f in model.categories
                    if f"history_cat_{f}" in tensors
                },
                candidate_items=_ids(tensors["candidate_item_ids"][b, :count], model.items.size),
                candidate_categorical={
                    f: _ids(tensors[f"candidate_cat_{f}"][b, :count], model.categories[f].size)
                    for f in model.categories
                    if f"candidate_cat_{f}" in tensors
                },
                request_time=when,
            )
        )
    return feeds


def _rows(tensors: dict[str, np.ndarray]) -> int:
    """The batch size B, once every input has its shape: [B] for lengths and times, the shape of
    `history_item_ids` for every history_* input and of `candidate_item_ids` for candidate_*."""
    rows = tensors["request_time"].shape[0]
    widths = {side: tensors[f"{side}_item_ids"].shape[-1] for side in ("history", "candidate")}
    for name, tensor in tensors.items():
        expected = (rows,) if name.endswith(("lengths", "time")) else (rows, widths[name.split("_")[0]])
        if tensor.shape != expected:
            raise FeedError(("inputs", name), f"shape {list(tensor.shape)} does not fit the batch: expected {list(expected)}")
    if rows == 0:
        raise FeedError(("inputs", "request_time"), "needs at least one row")
    return rows


def _within(values: np.ndarray, low: int, high: int, name: str, *row: int, message: str | None = None) -> None:
    """Refuse the first value outside [low, high], naming the input and its position."""
    outside = np.flatnonzero((values < low) | (values > high))
    if len(outside):
        raise FeedError(("inputs", name, *row, int(outside[0])), message or f"must be within [{low}, {high}]")


def _ids(values: np.ndarray, size: int) -> np.ndarray:
    return np.where((values >= 0) & (values < size), values, OOV)


def named_model(name: str, model: Model, version: str | None = None) -> ServedModel:
    """The served snapshot, if it is the model (and version) the path names; 404 otherwise."""
    if name != model.name or (version is not None and version != model.version):
        raise ApiError(404, f"unknown model {name!r}" + (f" version {version!r}" if version else ""))
    return model


Named = Annotated[ServedModel, Depends(named_model)]
router = APIRouter(tags=["inference protocol"])
METADATA_ERRORS, READY_ERRORS, INFER_ERRORS = declared(401, 404, 503), declared(404, 503), declared(400, 401, 404, 413, 422, 503)


@router.get("/v2")
async def server_metadata() -> dict:
    return {"name": "rotorec", "version": __version__, "extensions": []}


@router.get("/v2/models/{name}", responses=METADATA_ERRORS)
@router.get("/v2/models/{name}/versions/{version}", responses=METADATA_ERRORS)
async def model_metadata(model: Named) -> dict:
    return _metadata(model)


@router.get("/v2/models/{name}/ready", responses=READY_ERRORS)
@router.get("/v2/models/{name}/versions/{version}/ready", responses=READY_ERRORS)
async def model_ready(model: Named) -> dict:
    return {"name": model.name, "ready": True}


@router.post("/v2/models/{name}/infer", responses=INFER_ERRORS)
@router.post("/v2/models/{name}/versions/{version}/infer", responses=INFER_ERRORS)
async def infer(body: InferRequest, state: State, model: Named) -> dict:
    feeds = _feeds(_tensors(body, model), model, state.settings.max_history, state.settings.max_candidates)
    results = await state.score(model, feeds)
    out = np.zeros((len(feeds), max(len(f.candidate_items) for f in feeds), len(model.tasks)), dtype=np.float32)
    for row, scored in enumerate(results):
        out[row, : len(scored.probabilities)] = scored.probabilities
    return {
        "id": body.id,
        "model_name": model.name,
        "model_version": model.version,
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": list(out.shape), "data": out.ravel().tolist()}],
    }
