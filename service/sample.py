"""`rotorec serve --sample-feed PREPARED`: start the service, score one real feed, print it, stop.

The feed is the first test window of a prepared folder: that user's history before their last
impression, and the impression's items (or the next events) as candidates. It goes over HTTP to
a real uvicorn server on a free loopback port, exactly as a client's request would.
"""

from __future__ import annotations

import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import torch
import uvicorn

from rotorec.features.dataset import SequenceDataset
from rotorec.features.vocab import RESERVED, Vocabulary
from rotorec.model.inputs import batch_time
from rotorec.service.app import create_app
from rotorec.service.settings import ServiceSettings

MAX_CANDIDATES = 10


def iso_time(seconds: int, offset_minutes: int) -> str:
    """ISO-8601 text of UTC seconds in a zone given by its offset (what a client would send)."""
    return datetime.fromtimestamp(seconds, timezone(timedelta(minutes=offset_minutes))).isoformat()


def sample_feed(run: Path, prepared: Path) -> dict:
    data = SequenceDataset(prepared, "test")
    batch = data.__getitems__([0])
    items = Vocabulary.load(run / "vocab", "item")
    targets = torch.nonzero(batch.target[0] & batch.valid[0]).flatten().tolist()
    first = targets[0]
    cut = int(batch_time(batch).slot[0, first])  # the history before the first target's slate
    fields = list(data.schema.categorical)
    tables = {f: Vocabulary.load(run / "vocab", f) for f in fields}

    def event(j: int) -> dict:
        return {
            "item_id": str(items.key_of([int(batch.item[0, j])])[0]),
            "timestamp": iso_time(int(batch.timestamp[0, j]), int(batch.tz_offset_minutes[0, j])),
            "action": data.schema.actions[int(batch.action[0, j]) - RESERVED],
            "features": {
                f: str(tables[f].key_of([int(batch.categorical[f][0, j, 0])])[0])
                for f in fields
                if int(batch.categorical[f][0, j, 0]) >= RESERVED
            },
        }

    return {
        "user_id": batch.users[0],
        "request_time": iso_time(int(batch.timestamp[0, first]), int(batch.tz_offset_minutes[0, first])),
        "history": [event(j) for j in range(cut)],
        "candidates": [{"item_id": str(items.key_of([int(batch.item[0, j])])[0])} for j in targets[:MAX_CANDIDATES]],
    }


def wait_until_ready(url: str, timeout_s: float = 120.0, alive=lambda: True) -> None:
    """Poll /v2/health/ready until it answers 200 (raises if `alive()` turns false or time runs out)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"the server at {url} exited before it was ready")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the server at {url} was not ready after {timeout_s:.0f} s")


def serve_sample(settings: ServiceSettings, prepared: Path) -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    token = settings.scoring_tokens[0] if settings.scoring_tokens else None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        wait_until_ready(url, alive=thread.is_alive)
        feed = sample_feed(settings.run, prepared)
        response = httpx.post(f"{url}/v1/rank", json=feed, headers=headers, timeout=60)
        response.raise_for_status()
        ranked = response.json()
        print(
            f"served by {ranked['model']['name']} {ranked['model']['version']} at {url}: user {feed['user_id']}, "
            f"{len(feed['history'])} history events, {len(feed['candidates'])} candidates"
        )
        tasks = list(ranked["scores"][0]["probabilities"])
        print(f"{'rank':>4}  {'item':>10}  " + "  ".join(f"{t:>10}" for t in tasks) + f"  {'score':>8}")
        for position, index in enumerate(ranked["ranking"], start=1):
            entry = ranked["scores"][index]
            print(
                f"{position:>4}  {entry['item_id']:>10}  "
                + "  ".join(f"{entry['probabilities'][t]:>10.4f}" for t in tasks)
                + f"  {entry['score']:>8.4f}"
            )
        return 0
    finally:
        server.should_exit = True
        thread.join(timeout=60)
