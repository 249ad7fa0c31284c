"""`POST /v1/events`: a user's new events read into their cached recurrent state (docs/serving.md,
"Per-user recurrent state"), so a later `/v1/rank` reads only what came after."""

from __future__ import annotations

from fastapi import APIRouter

from rotorec.service.dependencies import Model, State
from rotorec.service.errors import ApiError, declared
from rotorec.service.schemas import EventsRequest

router = APIRouter(tags=["scoring"])


@router.post("/v1/events", responses=declared(400, 401, 409, 413, 503))
async def events(body: EventsRequest, state: State, model: Model) -> dict:
    """Append a user's new events to their cached state: O(1) per event and layer."""
    if not model.streams:
        raise ApiError(409, "per-user state needs a model whose every layer is recurrent (rotrnn/fprnn)")
    feed = model.events_feed(body.events, state.settings.max_history)
    before = state.states.get(model.version, body.user_id)
    if before is not None and int(feed.history_seconds[0]) < before.last_seconds:
        state.states.drop(model.version, body.user_id)
        return {
            "user_id": body.user_id,
            "model": {"name": model.name, "version": model.version},
            "applied": 0,
            "events": 0,
            "dropped": True,
        }
    after = await state.batcher.run_in_inference_thread(model.advance, before, feed)
    state.states.store(body.user_id, after)
    return {
        "user_id": body.user_id,
        "model": {"name": model.name, "version": model.version},
        "applied": len(feed.history_items),
        "events": after.events,
        "dropped": False,
    }
