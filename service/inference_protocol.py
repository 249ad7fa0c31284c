"""KServe Open Inference Protocol v2 routes (serving.md §4) over the same batcher and model.

Tensors carry vocabulary ids (out of range → OOV), UTC seconds and lengths; `data` is the flat
row-major list. The output `probabilities` is FP32 [B, C, tasks], task order in the metadata,
0 in padded slots; for the same feed it equals what `/v1/rank` returns.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

import numpy as np
from fastapi import FastAPI
from pydantic import Field

from features.vocab import OOV
from rotorec import __version__
from service.feeds import Feed, FeedError, ServedModel
from service.schemas import LATEST_SECOND, Strict, Text

REQUIRED = ("history_item_ids", "history_timestamps", "history_actions", "history_lengths", "candidate_item_ids",
            "candidate_lengths", "request_time")


class InferTensor(Strict):
    name: Text
    shape: list[Annotated[int, Field(ge=0)]] = Field(min_length=1, max_length=2)
    datatype: Literal["INT64"]
    data: list[int]


class InferRequest(Strict):
    id: Text | None = None
    inputs: list[InferTensor] = Field(min_length=1, max_length=64)
    outputs: list[dict] | None = None
    parameters: dict | None = None


def _metadata(model: ServedModel) -> dict:
    dims = {"history": [-1, -1], "candidate": [-1, -1], "row": [-1]}
    inputs = [{"name": n, "datatype": "INT64", "shape": dims["row" if n.endswith(("lengths", "time")) else n.split("_")[0]]}
              for n in REQUIRED]
    for field in model.categories:
        inputs += [{"name": f"history_cat_{field}", "datatype": "INT64", "shape": [-1, -1], "optional": True},
                   {"name": f"candidate_cat_{field}", "datatype": "INT64", "shape": [-1, -1], "optional": True}]
    return {"name": model.name, "versions": [model.version], "platform": "pytorch", "inputs": inputs,
            "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, -1, len(model.tasks)]}],
            "parameters": {"tasks": model.tasks}}


def _tensors(body: InferRequest, model: ServedModel) -> dict[str, np.ndarray]:
    tensors = {}
    known = set(REQUIRED) | {f"{side}_cat_{f}" for f in model.categories for side in ("history", "candidate")}
    for k, tensor in enumerate(body.inputs):
        if tensor.name not in known:
            raise FeedError(("inputs", k, "name"), f"unknown input {tensor.name!r}")
        if int(np.prod(tensor.shape)) != len(tensor.data):
            raise FeedError(("inputs", k, "data"), f"{len(tensor.data)} values do not fill shape {tensor.shape}")
        tensors[tensor.name] = np.asarray(tensor.data, dtype=np.int64).reshape(tensor.shape)
    missing = [n for n in REQUIRED if n not in tensors]
    if missing:
        raise FeedError(("inputs",), f"missing inputs: {missing}")
    return tensors


def _feeds(tensors: dict[str, np.ndarray], model: ServedModel, max_history: int, max_candidates: int) -> list[Feed]:
    rows = tensors["request_time"].shape[0]
    for name in REQUIRED:
        if tensors[name].shape[0] != rows or tensors[name].ndim != (1 if name.endswith(("lengths", "time")) else 2):
            raise FeedError(("inputs", name), f"shape {list(tensors[name].shape)} does not fit batch size {rows}")
    history_width, candidate_width = tensors["history_item_ids"].shape[1], tensors["candidate_item_ids"].shape[1]
    feeds = []
    for b in range(rows):
        length, count, when = (int(tensors[n][b]) for n in ("history_lengths", "candidate_lengths", "request_time"))
        if not 0 <= length <= min(history_width, max_history):
            raise FeedError(("inputs", "history_lengths", b), f"must be within [0, {min(history_width, max_history)}]")
        if not 1 <= count <= min(candidate_width, max_candidates):
            raise FeedError(("inputs", "candidate_lengths", b), f"must be within [1, {min(candidate_width, max_candidates)}]")
        if not 0 <= when < LATEST_SECOND:
            raise FeedError(("inputs", "request_time", b), "must be Unix seconds before 2100")
        seconds = tensors["history_timestamps"][b, :length]
        if ((seconds < 0) | (seconds >= LATEST_SECOND)).any():
            raise FeedError(("inputs", "history_timestamps", b), "must be Unix seconds before 2100")
        feeds.append(model.feed_from_ids(
            history_items=_ids(tensors["history_item_ids"][b, :length], model.items.size),
            history_actions=_ids(tensors["history_actions"][b, :length], 2 + len(model.actions)),
            history_seconds=seconds,
            history_categorical={f: _ids(tensors[f"history_cat_{f}"][b, :length], model.categories[f].size)
                                 for f in model.categories if f"history_cat_{f}" in tensors},
            candidate_items=_ids(tensors["candidate_item_ids"][b, :count], model.items.size),
            candidate_categorical={f: _ids(tensors[f"candidate_cat_{f}"][b, :count], model.categories[f].size)
                                   for f in model.categories if f"candidate_cat_{f}" in tensors},
            request_time=when))
    return feeds


def _ids(values: np.ndarray, size: int) -> np.ndarray:
    return np.where((values >= 0) & (values < size), values, OOV)


def install_v2_routes(app: FastAPI, state, scoring) -> None:
    from service.app import ApiError, _require_model, _score

    def named(name: str, version: str | None) -> ServedModel:
        model = _require_model(state)
        if name != model.name or (version is not None and version != model.version):
            raise ApiError(404, f"unknown model {name!r}" + (f" version {version!r}" if version else ""))
        return model

    @app.get("/v2", tags=["inference protocol"])
    async def server_metadata() -> dict:
        return {"name": "rotorec", "version": __version__, "extensions": []}

    @app.get("/v2/models/{name}", dependencies=[scoring], tags=["inference protocol"])
    @app.get("/v2/models/{name}/versions/{version}", dependencies=[scoring], tags=["inference protocol"])
    async def model_metadata(name: str, version: str | None = None) -> dict:
        return _metadata(named(name, version))

    @app.get("/v2/models/{name}/ready", tags=["inference protocol"])
    @app.get("/v2/models/{name}/versions/{version}/ready", tags=["inference protocol"])
    async def model_ready(name: str, version: str | None = None) -> dict:
        named(name, version)
        return {"name": name, "ready": True}

    @app.post("/v2/models/{name}/infer", dependencies=[scoring], tags=["inference protocol"])
    @app.post("/v2/models/{name}/versions/{version}/infer", dependencies=[scoring], tags=["inference protocol"])
    async def infer(name: str, body: InferRequest, version: str | None = None) -> dict:
        model = named(name, version)
        feeds = _feeds(_tensors(body, model), model, state.settings.max_history, state.settings.max_candidates)
        results = await asyncio.gather(*(_score(state, feed) for feed in feeds))
        width = max(len(f.candidate_items) for f in feeds)
        out = np.zeros((len(feeds), width, len(model.tasks)), dtype=np.float32)
        for row, (scored, _) in enumerate(results):
            out[row, : len(scored.probabilities)] = scored.probabilities
        scored_by = results[0][1]
        return {"id": body.id, "model_name": scored_by.name, "model_version": scored_by.version,
                "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": list(out.shape),
                             "data": out.ravel().tolist()}]}
