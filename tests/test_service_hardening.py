"""The service under hostile load, against a real `rotorec serve` (uvicorn) on 127.0.0.1.

Hot reloads between two runs with different vocabularies while eight clients score: every
answer must be the exact score of the one model snapshot it names. A v2 request asking for far
more work than /v1/rank allows is refused at once and queues nothing. Hostile input of every
kind gets its 4xx naming the field, never a 500, and the connection stays usable. Auth is
decided before a body is read.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from conftest import ADMIN_AUTH, AUTH, REPO, Server, run_rotorec
from rotorec.features.vocab import Vocabulary
from rotorec.service.schemas import RankRequest
from rotorec.service.scoring import ServedModel

CLIENTS, REQUESTS_PER_CLIENT, RELOADS = 8, 300, 10
REQUEST_TIME = 1_717_400_000
RANK, INFER = "/v1/rank", "/v2/models/rotorec/infer"

pytestmark = pytest.mark.slow  # every test uses a `rotorec serve` subprocess and a run trained by `rotorec train`


@pytest.fixture(scope="module")
def runs_root(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`a` (the suite's trained run) and `b`, trained on another synthetic feed: a smaller item
    vocabulary (ids valid in `a` are out of range in `b`) and another action order."""
    from rotorec.features.adapters.events import events_source
    from rotorec.features.prepare import PrepareOptions, prepare
    from rotorec.features.synth.config import SynthConfig
    from rotorec.features.synth.writer import write_feed

    base = tmp_path_factory.mktemp("reload_race")
    write_feed(SynthConfig.from_preset("tiny", seed=11, items=150, users=30, days=3), base / "feed", progress=False)
    prepare(events_source(base / "feed"), base / "prepared", PrepareOptions(max_len=50, windows="all", progress=False))
    root = base / "runs"
    shutil.copytree(trained_run, root / "a")
    run_rotorec(
        "train",
        "--data",
        str(base / "prepared"),
        "--config",
        str(REPO / "configs" / "tiny.yaml"),
        "--out",
        str(root / "b"),
        "--no-progress",
        "--set",
        "train.max_steps=5",
        "--set",
        "train.eval_every=5",
        "--set",
        "model.d_model=16",
        "--set",
        "train.batch_size=8",
    )
    return root


@pytest.fixture(scope="module")
def server(runs_root: Path):
    server = Server(runs_root / "a", "--runs-root", str(runs_root), "--max-batch-size", "16", "--max-wait-ms", "2")
    yield server
    assert server.stop() == 0


def _bodies(runs_root: Path) -> list[dict]:
    """Feeds whose items mean different things to the two runs: candidates include ids of `a`
    beyond the size of `b`'s vocabulary, history items are `b`'s most frequent ones."""
    a, b = (Vocabulary.load(runs_root / name / "vocab", "item").keys for name in ("a", "b"))
    bodies = []
    for k in range(12):
        history = [
            {"item_id": str(b[(k + j) % 20]), "timestamp": REQUEST_TIME - 3600 * (j + 1), "action": ("click", "none")[(k + j) % 2]}
            for j in range(1 + k % 4)
        ]
        candidates = [{"item_id": str(a[-1 - (k * 5 + j) % 200])} for j in range(3)] + [{"item_id": str(b[k])}]
        bodies.append({"user_id": f"u{k}", "request_time": REQUEST_TIME, "history": history, "candidates": candidates})
    return bodies


def _expected(runs_root: Path, bodies: list[dict]) -> dict[str, list[np.ndarray]]:
    """version -> each body's calibrated probabilities [C, tasks], scored alone, offline."""
    out = {}
    for name in ("a", "b"):
        model = ServedModel.load(runs_root / name, "cpu")
        out[model.version] = [model.score([model.feed(RankRequest.model_validate(body), 2048)])[0].probabilities for body in bodies]
    assert len(out) == 2, "the two runs need distinct versions"
    return out


def test_hot_reloads_between_vocabularies_never_mix_snapshots(server: Server, runs_root: Path) -> None:
    bodies = _bodies(runs_root)
    expected = _expected(runs_root, bodies)
    answers: list[tuple[int, int, dict | str]] = []
    reload_statuses: list[int] = []
    reloads_done = threading.Event()
    deadline = time.monotonic() + 180

    def score_loop(worker: int) -> None:
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as http:
            sent = 0
            while (sent < REQUESTS_PER_CLIENT or not reloads_done.is_set()) and time.monotonic() < deadline:
                index = (worker * 7 + sent) % len(bodies)
                try:
                    response = http.post("/v1/rank", json=bodies[index])
                except httpx.TransportError as error:  # a connection reset after a 500 is a failure too
                    answers.append((index, 0, repr(error)))
                else:
                    answers.append((index, response.status_code, response.json() if response.status_code == 200 else response.text))
                sent += 1

    def reloader() -> None:
        with httpx.Client(base_url=server.url, headers=ADMIN_AUTH, timeout=60) as http:
            while (len(reload_statuses) < RELOADS or any(t.is_alive() for t in clients)) and time.monotonic() < deadline:
                reload_statuses.append(http.post("/admin/reload", json={"run": "ba"[len(reload_statuses) % 2]}).status_code)
                if len(reload_statuses) >= RELOADS:
                    reloads_done.set()
        reloads_done.set()

    clients = [threading.Thread(target=score_loop, args=(k,)) for k in range(CLIENTS)]
    for thread in clients:
        thread.start()
    swapper = threading.Thread(target=reloader)
    swapper.start()
    for thread in [*clients, swapper]:
        thread.join()

    assert time.monotonic() < deadline, "the race did not finish in time"
    assert len(reload_statuses) >= RELOADS and set(reload_statuses) == {200}, reload_statuses
    assert len(answers) >= CLIENTS * REQUESTS_PER_CLIENT
    failed = [(index, status, body) for index, status, body in answers if status != 200]
    assert not failed, f"{len(failed)} failed requests, e.g. {failed[:3]}"
    seen = {version: 0 for version in expected}
    for index, _, body in answers:
        version = body["model"]["version"]
        seen[version] += 1
        served = np.array([list(score["probabilities"].values()) for score in body["scores"]])
        error = np.abs(served - expected[version][index]).max()
        assert error <= 1e-5, f"body {index} labelled {version} differs from that version's score by {error}"
    assert min(seen.values()) > 0, seen


def _tensor(name: str, shape: list[int], data: list) -> dict:
    return {"name": name, "shape": shape, "datatype": "INT64", "data": data}


def _infer_body(rows: list[dict], history_width: int, candidate_width: int) -> dict:
    """A v2 request: each row {items, times, actions, candidates, request_time}, zero-padded."""

    def padded(name: str, key: str, width: int) -> dict:
        return _tensor(name, [len(rows), width], [v for r in rows for v in (r[key] + [0] * width)[:width]])

    def per_row(name: str, values: list[int]) -> dict:
        return _tensor(name, [len(rows)], values)

    return {
        "inputs": [
            padded("history_item_ids", "items", history_width),
            padded("history_timestamps", "times", history_width),
            padded("history_actions", "actions", history_width),
            per_row("history_lengths", [len(r["items"]) for r in rows]),
            padded("candidate_item_ids", "candidates", candidate_width),
            per_row("candidate_lengths", [len(r["candidates"]) for r in rows]),
            per_row("request_time", [r["request_time"] for r in rows]),
        ]
    }


def _metric(http: httpx.Client, name: str) -> float:
    return float(next(line.split()[-1] for line in http.get("/metrics").text.splitlines() if line.startswith(name)))


def test_v2_amplification_is_refused_at_once_and_queues_nothing(server: Server, runs_root: Path) -> None:
    row = {"items": [3], "times": [REQUEST_TIME - 60], "actions": [2], "candidates": list(range(2, 1002)), "request_time": REQUEST_TIME}
    body = _infer_body([row] * 200, 1, 1000)  # 200 rows x 1,000 candidates, ~1 MB
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=120) as http:
        queued_before = _metric(http, "ranker_candidates_per_request_count")
        started = time.monotonic()
        refused = http.post(INFER, json=body)
        elapsed = time.monotonic() - started
        assert refused.status_code == 422 and "candidate_lengths" in refused.json()["error"], refused.text[:300]
        assert elapsed < 5, f"refusing took {elapsed:.1f} s"
        assert _metric(http, "ranker_candidates_per_request_count") == queued_before  # not one row was queued
        # Within the limits in total, several rows are one request, and each row equals /v1/rank.
        assert http.post("/admin/reload", json={"run": "a"}, headers=ADMIN_AUTH).status_code == 200
        rows = [
            {
                "items": [3, 4][: k + 1],
                "times": [REQUEST_TIME - 600, REQUEST_TIME - 60][: k + 1],
                "actions": [2, 3][: k + 1],
                "candidates": [5, 6, 7][: k + 2],
                "request_time": REQUEST_TIME,
            }
            for k in range(2)
        ]
        inferred = http.post(INFER, json=_infer_body(rows, 2, 3))
        assert inferred.status_code == 200, inferred.text
        output = inferred.json()["outputs"][0]
        values = np.array(output["data"]).reshape(output["shape"])
        model = ServedModel.load(runs_root / "a", "cpu")
        actions = {number: name for name, number in model.actions.items()}
        for k, r in enumerate(rows):
            ranked = http.post(
                RANK,
                json={
                    "user_id": "v2",
                    "request_time": REQUEST_TIME,
                    "candidates": [{"item_id": str(key)} for key in model.items.key_of(r["candidates"])],
                    "history": [
                        {"item_id": str(key), "timestamp": t, "action": actions[a]}
                        for key, t, a in zip(model.items.key_of(r["items"]), r["times"], r["actions"])
                    ],
                },
            ).json()
            expected = np.array([list(s["probabilities"].values()) for s in ranked["scores"]])
            assert np.abs(values[k, : len(r["candidates"])] - expected).max() <= 1e-6
            assert not values[k, len(r["candidates"]) :].any()  # padded slots are 0


def _v2(**replace: dict) -> dict:
    """A valid one-row v2 body with some inputs replaced."""
    row = {"items": [3], "times": [REQUEST_TIME - 60], "actions": [2], "candidates": [4, 5], "request_time": REQUEST_TIME}
    inputs = {tensor["name"]: tensor for tensor in _infer_body([row], 1, 2)["inputs"]}
    return {"inputs": list({**inputs, **replace}.values())}


def _rank(**replace) -> dict:
    return {
        "user_id": "u",
        "request_time": REQUEST_TIME,
        "candidates": [{"item_id": "a"}],
        "history": [{"item_id": "b", "timestamp": REQUEST_TIME - 60, "action": "click"}],
        **replace,
    }


HOSTILE = [
    ("lone surrogate in user_id", RANK, b'{"user_id": "\\ud800", "request_time": 10, "candidates": [{"item_id": "a"}]}', 422, "user_id"),
    (
        "lone surrogate in a feature name",
        RANK,
        b'{"user_id": "u", "request_time": 10, "candidates": [{"item_id": "a", "features": {"\\udc00": "x"}}]}',
        422,
        "features",
    ),
    (
        "lone surrogate in a v2 input name",
        INFER,
        b'{"inputs": [{"name": "\\ud800", "shape": [1], "datatype": "INT64", "data": [1]}]}',
        422,
        "name",
    ),
    ("a body that is not UTF-8", RANK, b'{"user_id": "\xff\xfe"}', 400, '"error"'),
    ("request_time true", RANK, _rank(request_time=True, history=[]), 422, "request_time"),
    ("history timestamp true", RANK, _rank(history=[{"item_id": "b", "timestamp": True, "action": "click"}]), 422, "timestamp"),
    ("tz_offset_minutes false", RANK, _rank(tz_offset_minutes=False), 422, "tz_offset_minutes"),
    ("top_k true", RANK, _rank(top_k=True), 422, "top_k"),
    ("item_id true", RANK, _rank(candidates=[{"item_id": True}]), 422, "item_id"),
    ("label true", RANK, _rank(history=[{"item_id": "b", "timestamp": 5, "labels": {"click": True}}]), 422, "labels"),
    ("blend weight true", RANK, _rank(blend={"click": True}), 422, "blend"),
    ("v2 data beyond int64", INFER, _v2(candidate_item_ids=_tensor("candidate_item_ids", [1, 2], [4, 2**64])), 422, "data"),
    ("v2 data below int64", INFER, _v2(candidate_item_ids=_tensor("candidate_item_ids", [1, 2], [4, -(2**63) - 1])), 422, "data"),
    ("v2 data true", INFER, _v2(candidate_item_ids=_tensor("candidate_item_ids", [1, 2], [4, True])), 422, "data"),
    ("v2 shape product wraps int64", INFER, _v2(history_item_ids=_tensor("history_item_ids", [2**32, 2**32], [])), 422, "shape"),
    ("v2 empty shape with a huge side", INFER, _v2(history_item_ids=_tensor("history_item_ids", [0, 2**62], [])), 422, "shape"),
    ("v2 shapes that disagree", INFER, _v2(history_timestamps=_tensor("history_timestamps", [1, 2], [1, 2])), 422, "history_timestamps"),
    (
        "v2 category of another batch size",
        INFER,
        _v2(history_cat_category=_tensor("history_cat_category", [2, 1], [2, 3])),
        422,
        "history_cat_category",
    ),
    (
        "v2 no rows",
        INFER,
        _v2(
            **{n: _tensor(n, [0], []) for n in ("history_lengths", "candidate_lengths", "request_time")},
            **{n: _tensor(n, [0, 1], []) for n in ("history_item_ids", "history_timestamps", "history_actions", "candidate_item_ids")},
        ),
        422,
        "request_time",
    ),
    (
        "v2 history after the request time",
        INFER,
        _v2(history_timestamps=_tensor("history_timestamps", [1, 1], [REQUEST_TIME + 301])),
        422,
        "history_timestamps",
    ),
    (
        "v1 history after the request time",
        RANK,
        _rank(history=[{"item_id": "b", "timestamp": REQUEST_TIME + 301, "action": "click"}]),
        422,
        "after request_time",
    ),
]


@pytest.mark.parametrize("name,route,body,status,field", HOSTILE, ids=[case[0] for case in HOSTILE])
def test_hostile_input_gets_its_4xx_and_the_connection_survives(
    server: Server, name: str, route: str, body, status: int, field: str
) -> None:
    content = body if isinstance(body, bytes) else httpx.Request("POST", "/", json=body).content
    with httpx.Client(base_url=server.url, headers={**AUTH, "content-type": "application/json"}, timeout=30) as http:
        response = http.post(route, content=content)
        assert response.status_code == status, response.text
        assert response.headers.get("connection") != "close"
        assert field in response.text, response.text
        assert http.get("/v2/health/ready").status_code == 200  # the same keep-alive connection still works


def test_v1_and_v2_agree_on_the_future_history_slack(server: Server) -> None:
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as http:
        at_slack = REQUEST_TIME + 300
        assert http.post(RANK, json=_rank(history=[{"item_id": "b", "timestamp": at_slack, "action": "click"}])).status_code == 200
        assert http.post(INFER, json=_v2(history_timestamps=_tensor("history_timestamps", [1, 1], [at_slack]))).status_code == 200


def test_auth_is_decided_before_the_body_is_read(server: Server) -> None:
    json_type = {"content-type": "application/json"}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.post(RANK, content=b"{not json", headers=json_type).status_code == 401
        too_big = http.post(RANK, content=b"[" + b"1," * 3_000_000 + b"1]", headers=json_type)
        assert too_big.status_code == 401 and too_big.headers["www-authenticate"] == "Bearer"
        assert http.post(INFER, content=b"{not json", headers={**json_type, "Authorization": "Bearer wrong"}).status_code == 401
        assert http.post("/admin/reload", content=b"{not json", headers={**json_type, **AUTH}).status_code == 403
        assert http.post(RANK, content=b"{not json", headers={**json_type, **AUTH}).status_code == 422
