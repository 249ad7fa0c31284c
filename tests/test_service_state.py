"""Per-user recurrent state in the service: cached and re-encoded histories score alike."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from conftest import AUTH, REPO, Server, run_rotorec
from rotorec.features.vocab import Vocabulary

pytestmark = pytest.mark.slow  # every test uses a `rotorec serve` subprocess


@pytest.fixture(scope="module")
def recurrent_server(tiny_prepared: Path, tmp_path_factory: pytest.TempPathFactory):
    run = tmp_path_factory.mktemp("recurrent") / "run"
    run_rotorec(
        "train",
        "--data",
        str(tiny_prepared),
        "--config",
        str(REPO / "configs" / "tiny.yaml"),
        "--out",
        str(run),
        "--no-progress",
        "--set",
        "train.max_steps=10",
        "--set",
        "train.eval_every=10",
        "--set",
        "model.d_model=32",
        "--set",
        "train.batch_size=16",
        "--set",
        "model.mixers=[rotrnn, fprnn]",
        "--set",
        "model.rotrnn={time_conditioned: true, heads: 4}",
        "--set",
        "model.fprnn={time_conditioned: true, tolerance: 1.0e-4, max_iterations_eval: 100}",
    )
    server = Server(run)
    yield server, Vocabulary.load(run / "vocab", "item").keys
    assert server.stop() == 0


def _events(keys, start: int, count: int) -> list[dict]:
    return [
        {
            "item_id": str(keys[(start + k) % len(keys)]),
            "timestamp": 1_717_000_000 + 600 * (start + k),
            "action": "click" if k % 3 == 0 else "none",
        }
        for k in range(count)
    ]


def _probabilities(response: httpx.Response) -> list[list[float]]:
    assert response.status_code == 200, response.text
    return [list(s["probabilities"].values()) for s in response.json()["scores"]]


def _close(a: list[list[float]], b: list[list[float]], tolerance: float) -> bool:
    return all(abs(x - y) <= tolerance * max(abs(y), 1e-6) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


def _lookups(client: httpx.Client, result: str) -> float:
    line = next(
        (
            row
            for row in client.get("/metrics").text.splitlines()
            if row.startswith(f'ranker_state_cache_lookups_total{{result="{result}"}}')
        ),
        None,
    )
    return 0.0 if line is None else float(line.split()[-1])


def test_streamed_events_and_cached_histories_equal_a_full_re_encode(recurrent_server) -> None:
    server, keys = recurrent_server
    candidates = [{"item_id": str(k)} for k in keys[:6]]
    request_time = 1_717_000_000 + 600 * 60
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as client:

        def rank(user: str, history: list[dict]) -> list[list[float]]:
            return _probabilities(
                client.post("/v1/rank", json={"user_id": user, "request_time": request_time, "history": history, "candidates": candidates})
            )

        history = _events(keys, 0, 40)
        first = rank("streamed", history)
        assert _lookups(client, "miss") >= 1
        appended = client.post("/v1/events", json={"user_id": "streamed", "events": _events(keys, 40, 5)})
        assert appended.status_code == 200 and appended.json()["events"] == 45, appended.text
        longer = history + _events(keys, 40, 5)
        hits_before = _lookups(client, "hit")
        cached = rank("streamed", longer)
        assert _lookups(client, "hit") == hits_before + 1
        fresh = rank("someone-else", longer)
        assert _close(cached, fresh, 1e-3), (cached, fresh)
        assert not _close(first, fresh, 1e-6)  # the five new events did change the scores
        # A request whose history differs from the cached one is re-encoded (stale), still exact.
        edited = [dict(e) for e in longer]
        edited[3]["action"] = "click+like" if edited[3]["action"] != "click+like" else "none"
        stale_before = _lookups(client, "stale")
        again = rank("streamed", edited)
        assert _lookups(client, "stale") == stale_before + 1
        assert _close(again, rank("third", edited), 1e-6)


def test_an_out_of_order_event_drops_the_state(recurrent_server) -> None:
    server, keys = recurrent_server
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as client:
        assert client.post("/v1/events", json={"user_id": "late", "events": _events(keys, 10, 3)}).json()["events"] == 3
        late = client.post("/v1/events", json={"user_id": "late", "events": _events(keys, 0, 1)})
        assert late.status_code == 200 and late.json()["dropped"] is True
        bad = client.post("/v1/events", json={"user_id": "late", "events": [{"item_id": "a", "timestamp": 5, "action": "fly"}]})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "events", 0, "action"]


def test_attention_models_refuse_per_user_state(server) -> None:
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as client:
        response = client.post("/v1/events", json={"user_id": "u", "events": [{"item_id": "a", "timestamp": 5, "action": "click"}]})
    assert response.status_code == 409 and "recurrent" in response.json()["error"]
