"""`POST /v1/rank`: one feed in, per-task probabilities, blended scores and a ranking out."""

from __future__ import annotations

import numpy as np
import orjson
from fastapi import APIRouter
from fastapi.responses import Response

from rotorec.service.dependencies import Model, State
from rotorec.service.errors import declared
from rotorec.service.featurize import Feed
from rotorec.service.limits import at_most
from rotorec.service.metrics import ServiceMetrics
from rotorec.service.schemas import OovCounts, RankRequest, RankResponse
from rotorec.service.scoring import ServedModel

router = APIRouter(tags=["scoring"])


@router.post("/v1/rank", response_model=RankResponse, responses=declared(400, 401, 413, 503))
async def rank(request: RankRequest, state: State, model: Model) -> Response:
    at_most(len(request.candidates), state.settings.max_candidates, ("body", "candidates"), "candidates")
    feed = model.feed(request, state.settings.max_history)
    if model.streams:
        feed.cached = state.states.lookup(model.version, request.user_id, feed)
    (scored,) = await state.score(model, [feed])
    if scored.state is not None:
        state.states.store(request.user_id, scored.state)
    return Response(orjson.dumps(_rank_response(state.metrics, request, feed, scored.probabilities, model)), media_type="application/json")


def _rank_response(metrics: ServiceMetrics, request: RankRequest, feed: Feed, probabilities: np.ndarray, model: ServedModel) -> dict:
    """The RankResponse body as plain JSON types (its schema is RankResponse; built here without
    per-candidate model objects, which cost more than the scoring itself at 1,000 candidates)."""
    tasks = request.tasks or model.tasks
    chosen = probabilities[:, [model.tasks.index(t) for t in tasks]].astype(np.float64)
    blend = request.blend or {task: 1.0 for task in tasks}
    scores = chosen @ np.array([blend.get(task, 0.0) for task in tasks])
    ranking = np.lexsort((np.arange(len(scores)), -scores))[: request.top_k or len(scores)]
    for k, task in enumerate(tasks):
        metrics.predicted.observe_many(task, chosen[:, k])
    rows = chosen.tolist()
    return {
        "model": {"name": model.name, "version": model.version},
        "request_time": feed.request_time,
        "scores": [
            {"index": i, "item_id": c.item_id, "probabilities": dict(zip(tasks, rows[i])), "score": float(scores[i])}
            for i, c in enumerate(request.candidates)
        ],
        "ranking": ranking.tolist(),
        "oov": OovCounts(**feed.oov).model_dump(),
        "history_truncated": feed.history_truncated,
    }
