"""The ranker against its own plain references: serving = training, no leakage, RoPE limits."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from rotorec.features.dataset import SequenceBatch, SequenceDataset
from rotorec.model.config import ModelConfig
from rotorec.model.encodings import SirenRope
from rotorec.model.inputs import Events, TimeInputs, batch_time, event_slots, local_time
from rotorec.model.ranker import Ranker
from rotorec.model.rotary import rotate_pairs
from rotorec.model.scoring import DEFAULT_MICRO_BATCH, candidate_logits

ENCODINGS = ["none", "rope", "to_rope", "siren_rope"]
TOLERANCE = 1e-5
STACKS = {  # mixer stacks the contract tests run on; FP-RNN iterates to convergence here
    "attention": {},
    "rotrnn": {"mixers": ["rotrnn", "attention"]},
    "rotrnn_time": {"mixers": ["attention", "rotrnn"], "rotrnn": {"time_conditioned": True, "orthogonal": True}},
    "fprnn": {"mixers": ["fprnn", "rotrnn"], "fprnn": {"tolerance": 1e-12, "max_iterations_eval": 200}},
}
ENCODING_AND_STACK = [(e, "attention") for e in ENCODINGS] + [("siren_rope", k) for k in STACKS if k != "attention"]


def _model(schema, encoding: str = "siren_rope", seed: int = 0, stack: str = "attention", **overrides) -> Ranker:
    torch.manual_seed(seed)
    overrides = {**STACKS[stack], **overrides}
    config = ModelConfig.from_feature_schema(
        schema,
        d_model=32,
        heads=2,
        layers=2,
        dropout=0.0,
        encoding=encoding,
        siren={"branches": ["timestamp", "cyclic", "categorical"], "hidden": 16},
        **overrides,
    )
    model = Ranker(config).eval()
    if encoding == "siren_rope":  # the categorical tables start at zero; make them matter in tests
        with torch.no_grad():
            for table in model.encoding.category_tables.values():
                table.weight[1:].normal_(0, 0.5)
    return model


def _logits(model: Ranker, batch: SequenceBatch) -> torch.Tensor:
    return model.task_logits(model.encode(batch.item, batch.categorical, batch.action, batch_time(batch), batch.valid).hidden)


def score_candidates(
    model: Ranker,
    history: Events,
    candidates: Events,
    request_time: torch.Tensor,
    tz_offset_minutes: torch.Tensor,
    micro_batch: int = DEFAULT_MICRO_BATCH,
) -> torch.Tensor:
    """Per-candidate, per-task probabilities [B, C, T] before calibration, as the service scores
    (padded candidate slots return 0)."""
    logits, _ = candidate_logits(model, history, candidates, request_time, tz_offset_minutes, micro_batch)
    return torch.sigmoid(logits) * candidates.valid.unsqueeze(-1)


def _history(batch: SequenceBatch, row: int, stop: int) -> Events:
    """Events [0, stop) of one window as a serving history (batch of one)."""
    cut = slice(0, stop)
    return Events(
        item=batch.item[row : row + 1, cut],
        categorical={k: v[row : row + 1, cut] for k, v in batch.categorical.items()},
        valid=batch.valid[row : row + 1, cut],
        action=batch.action[row : row + 1, cut],
        timestamp=batch.timestamp[row : row + 1, cut],
        has_time=batch.has_time[row : row + 1, cut],
        tz_offset_minutes=batch.tz_offset_minutes[row : row + 1, cut],
        impression=batch.impression[row : row + 1, cut],
    )


@pytest.fixture(scope="module")
def data(tiny_prepared: Path) -> tuple[SequenceDataset, SequenceBatch]:
    dataset = SequenceDataset(tiny_prepared, "valid")
    return dataset, dataset.__getitems__(list(range(min(6, len(dataset)))))


@pytest.mark.parametrize("encoding,stack", ENCODING_AND_STACK)
def test_training_prediction_equals_serving_score(data, encoding: str, stack: str) -> None:
    """(b) The prediction at p equals the score of item p given the history before p's slate
    (before p itself outside impressions) at request time t_p."""
    dataset, batch = data
    model = _model(dataset.schema, encoding, stack=stack)
    probabilities = torch.sigmoid(_logits(model, batch))
    row, length = 0, int(batch.lengths[0])
    slot = batch_time(batch).slot[row]
    inside_slate = int(torch.nonzero(slot[:length] < torch.arange(length))[0])
    for p in (0, 1, length // 2, inside_slate, length - 1):
        candidate = Events(
            item=batch.item[row : row + 1, p : p + 1],
            categorical={k: v[row : row + 1, p : p + 1] for k, v in batch.categorical.items()},
            valid=torch.ones(1, 1, dtype=torch.bool),
        )
        served = score_candidates(
            model,
            _history(batch, row, int(slot[p])),
            candidate,
            batch.timestamp[row : row + 1, p],
            batch.tz_offset_minutes[row : row + 1, p],
        )
        assert torch.allclose(served[0, 0], probabilities[row, p], atol=TOLERANCE, rtol=0), (encoding, p)


@pytest.mark.parametrize("encoding,stack", [("rope", "attention"), *[("siren_rope", k) for k in STACKS]])
def test_batched_candidates_equal_one_at_a_time(data, encoding: str, stack: str) -> None:
    """(a) N candidates in micro-batched passes score as each candidate alone."""
    dataset, batch = data
    model = _model(dataset.schema, encoding, stack=stack)
    generator = torch.Generator().manual_seed(1)
    count = 13
    items = torch.randint(2, dataset.schema.item_vocab_size, (1, count), generator=generator)
    categories = {
        k: torch.randint(0, info.vocab_size, (1, count, info.max_values), generator=generator)
        for k, info in dataset.schema.categorical.items()
    }
    candidates = Events(item=items, categorical=categories, valid=torch.ones(1, count, dtype=torch.bool))
    history = _history(batch, 1, int(batch.lengths[1]))
    request, zone = batch.timestamp[1:2, -1] + 3600, batch.tz_offset_minutes[1:2, 0]
    together = score_candidates(model, history, candidates, request, zone, micro_batch=4)
    for c in range(count):
        alone = Events(
            item=items[:, c : c + 1],
            categorical={k: v[:, c : c + 1] for k, v in categories.items()},
            valid=torch.ones(1, 1, dtype=torch.bool),
        )
        single = score_candidates(model, history, alone, request, zone)
        assert (together[0, c] - single[0, 0]).abs().max() <= TOLERANCE


@pytest.mark.parametrize("stack", STACKS)
def test_padded_histories_score_like_unpadded_ones(data, stack: str) -> None:
    """Several requests of different history lengths in one padded batch score as one by one."""
    dataset, batch = data
    model = _model(dataset.schema, stack=stack)
    candidates = Events(
        item=batch.item[:3, :5], categorical={k: v[:3, :5] for k, v in batch.categorical.items()}, valid=torch.ones(3, 5, dtype=torch.bool)
    )
    stops = [4, 9, 2]
    padded = Events(
        item=torch.stack([torch.nn.functional.pad(batch.item[r, :s], (0, 9 - s)) for r, s in enumerate(stops)]),
        categorical={
            k: torch.stack([torch.nn.functional.pad(v[r, :s], (0, 0, 0, 9 - s)) for r, s in enumerate(stops)])
            for k, v in batch.categorical.items()
        },
        valid=torch.stack([torch.arange(9) < s for s in stops]),
        action=torch.stack([torch.nn.functional.pad(batch.action[r, :s], (0, 9 - s)) for r, s in enumerate(stops)]),
        timestamp=torch.stack([torch.nn.functional.pad(batch.timestamp[r, :s], (0, 9 - s)) for r, s in enumerate(stops)]),
        has_time=torch.stack([torch.arange(9) < s for s in stops]),
        tz_offset_minutes=batch.tz_offset_minutes[:3, :9],
        impression=torch.stack([torch.nn.functional.pad(batch.impression[r, :s], (0, 9 - s)) for r, s in enumerate(stops)]),
    )
    request, zone = batch.timestamp[:3, 10], batch.tz_offset_minutes[:3, 0]
    together = score_candidates(model, padded, candidates, request, zone)
    for r, stop in enumerate(stops):
        single = score_candidates(
            model,
            _history(batch, r, stop),
            Events(
                item=candidates.item[r : r + 1],
                categorical={k: v[r : r + 1] for k, v in candidates.categorical.items()},
                valid=candidates.valid[r : r + 1],
            ),
            request[r : r + 1],
            zone[r : r + 1],
        )
        assert (together[r] - single[0]).abs().max() <= TOLERANCE


@pytest.mark.parametrize("stack", STACKS)
def test_labels_of_event_p_do_not_reach_its_prediction(data, stack: str) -> None:
    """(c) Changing event p's labels/action leaves predictions at <= p unchanged (and moves later ones)."""
    dataset, batch = data
    model = _model(dataset.schema, stack=stack)
    before = _logits(model, batch)
    changed = copy.copy(batch)
    p = 5
    real_actions = dataset.schema.action_vocab_size - 2  # ids 2.. (0 = PAD, 1 = OOV)
    assert real_actions >= 2
    changed.action = batch.action.clone()
    changed.action[:, p] = 2 + (batch.action[:, p] - 2 + 1) % real_actions  # a different real action
    changed.labels = batch.labels.clone()
    changed.labels[:, p] = 1 - batch.labels[:, p]
    assert (changed.action[:, p] != batch.action[:, p]).all()
    after = _logits(model, changed)
    assert torch.equal(before[:, : p + 1], after[:, : p + 1])
    assert (before[:, p + 1 :] - after[:, p + 1 :]).abs().max() > 1e-4  # the label is used, for later events


@pytest.mark.parametrize("stack", STACKS)
def test_slate_mates_never_see_each_other(data, stack: str) -> None:
    """An impression's events are scored together at serving time, so in training an event sees
    neither the action nor the content of an earlier event of its own impression."""
    dataset, batch = data
    model = _model(dataset.schema, stack=stack)
    slot = batch_time(batch).slot
    mates = torch.nonzero(slot < torch.arange(slot.shape[1]) & batch.valid)
    assert len(mates) > 0, "the synthetic feed should have multi-event impressions"
    row, p = (int(v) for v in mates[0])
    first = int(slot[row, p])
    changed = copy.copy(batch)
    changed.item, changed.action = batch.item.clone(), batch.action.clone()
    changed.item[row, first] = 2 + (batch.item[row, first] - 1) % (dataset.schema.item_vocab_size - 2)
    changed.action[row, first] = 2 + (batch.action[row, first] - 1) % (dataset.schema.action_vocab_size - 2)
    before, after = _logits(model, batch), _logits(model, changed)
    assert torch.equal(before[row, first + 1 : p + 1], after[row, first + 1 : p + 1])
    assert not torch.equal(before[row, first], after[row, first])  # the item itself did change


def test_event_slots_share_an_impressions_first_position() -> None:
    impression = torch.tensor([[0, 3, 3, 3, 0, 4, 5, 5, 0, 0]])
    assert event_slots(impression, impression.shape, impression.device).tolist() == [[0, 1, 1, 1, 4, 5, 6, 6, 8, 9]]


def test_siren_rope_without_time_scale_is_exactly_rope(data) -> None:
    """(d) ω_s = 0 and λ = 1 reproduce ordinal RoPE bit for bit."""
    dataset, batch = data
    siren = _model(dataset.schema, "siren_rope", seed=3)
    rope = _model(dataset.schema, "rope", seed=3)
    shared = {k: v for k, v in siren.state_dict().items() if not k.startswith("encoding.")}
    rope.load_state_dict(shared, strict=True)
    with torch.no_grad():
        siren.encoding.omega.zero_()
        siren.encoding.ordinal_scale.fill_(1.0)
    assert torch.equal(_logits(siren, batch), _logits(rope, batch))


def test_rotation_preserves_norms() -> None:
    """(e) Rotating q and k leaves their norms unchanged."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 7, 16, generator=generator)
    angles = torch.randn(3, 1, 7, 8, generator=generator) * 100
    rotated = rotate_pairs(x, torch.cos(angles), torch.sin(angles))
    assert torch.allclose(rotated.norm(dim=-1), x.norm(dim=-1), atol=1e-5, rtol=1e-6)


def test_whole_week_shifts_leave_cyclic_angles_unchanged(data) -> None:
    """(e) The cyclic branch sees only local time of day and week."""
    dataset, batch = data
    config = ModelConfig.from_feature_schema(dataset.schema, d_model=32, heads=2, siren={"branches": ["cyclic"]})
    encoding = SirenRope(config)
    for weeks in (1, 52, -30):
        shifted = batch.timestamp + weeks * 7 * 86_400
        second_of_day, day_of_week = local_time(shifted, batch.tz_offset_minutes, batch.has_time)
        moved = TimeInputs(
            slot=batch_time(batch).slot,
            seconds=shifted,
            has_time=batch.has_time,
            second_of_day=second_of_day,
            day_of_week=day_of_week,
            categorical=batch.categorical,
        )
        assert torch.equal(encoding.angles(batch_time(batch)), encoding.angles(moved))


def test_logits_ignore_a_constant_position_shift(data) -> None:
    dataset, batch = data
    model = _model(dataset.schema)
    time = batch_time(batch)
    base = model.encode(batch.item, batch.categorical, batch.action, time, batch.valid).hidden
    time.slot = time.slot + 123_457
    shifted = model.encode(batch.item, batch.categorical, batch.action, time, batch.valid).hidden
    assert (base - shifted).abs().max() <= TOLERANCE


def test_masked_timestamp_gives_zero_temporal_angle(data) -> None:
    dataset, batch = data
    config = ModelConfig.from_feature_schema(
        dataset.schema, d_model=32, heads=2, siren={"branches": ["timestamp", "cyclic"], "ordinal": False}
    )
    encoding = SirenRope(config)
    time = batch_time(batch)
    time.has_time = torch.zeros_like(time.has_time)
    assert torch.equal(encoding.angles(time), torch.zeros_like(encoding.angles(time)))


@pytest.mark.parametrize("stack", STACKS)
def test_padding_never_changes_real_positions(data, stack: str) -> None:
    """(f) Garbage in padded slots leaves every real position's output unchanged."""
    dataset, batch = data
    model = _model(dataset.schema, stack=stack)
    wide = dataset.__getitems__(list(range(len(batch.users))), pad_to=int(batch.lengths.max()) + 7)
    garbage = copy.copy(wide)
    pad = ~wide.valid
    generator = torch.Generator().manual_seed(5)
    garbage.item = torch.where(pad, torch.randint(2, dataset.schema.item_vocab_size, pad.shape, generator=generator), wide.item)
    garbage.action = torch.where(pad, torch.full_like(wide.action, 2), wide.action)
    garbage.timestamp = torch.where(pad, wide.timestamp + 999_999, wide.timestamp)
    garbage.has_time = wide.has_time | pad
    reference, noisy = _logits(model, wide), _logits(model, garbage)
    assert torch.equal(reference[wide.valid], noisy[wide.valid])
    assert (reference[:, : batch.item.shape[1]][batch.valid] - _logits(model, batch)[batch.valid]).abs().max() <= TOLERANCE


def test_gradients_reach_scale_ordinal_gate_and_both_branches(data) -> None:
    """(g) ω_s, λ, the sine branch, the MLP branch and the categorical tables all learn."""
    dataset, batch = data
    model = _model(dataset.schema).train()
    _logits(model, batch).sum().backward()
    encoding = model.encoding
    for name, parameter in [
        ("omega", encoding.omega),
        ("lambda", encoding.ordinal_scale),
        ("sine", encoding.sine[0].linear.weight),
        ("mlp", encoding.mlp[0].weight),
        *[(f"cat:{k}", t.weight) for k, t in encoding.category_tables.items()],
    ]:
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_config_rejects_unknown_keys_and_rebuilds_exactly(data, tmp_path: Path) -> None:
    dataset, batch = data
    with pytest.raises(ValidationError, match="encodng"):
        ModelConfig.from_feature_schema(dataset.schema, encodng="rope")
    with pytest.raises(ValidationError, match="mixers lists 1 entries for 2 layers"):
        ModelConfig.from_feature_schema(dataset.schema, layers=2, mixers=["rotrnn"])
    with pytest.raises(ValidationError, match="rotrnn.state must be even"):
        ModelConfig.from_feature_schema(dataset.schema, mixers=["rotrnn", "rotrnn"], rotrnn={"state": 5})
    model = _model(dataset.schema)
    rebuilt = Ranker(ModelConfig.model_validate_json(model.config.model_dump_json())).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert torch.equal(_logits(model, batch), _logits(rebuilt, batch))


def test_angles_and_rotation_stay_fp32_under_bf16_autocast(data) -> None:
    dataset, batch = data
    model = _model(dataset.schema)
    time = batch_time(batch)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        angles = model.encoding.angles(time)
        hidden = model.encode(batch.item, batch.categorical, batch.action, time, batch.valid).hidden
    assert angles.dtype == torch.float32
    assert torch.equal(angles, model.encoding.angles(time))  # identical with and without autocast
    assert torch.isfinite(hidden.float()).all()


def _label_safe_attention_reference(query, keys, values, action_values, earlier):
    """The plain form: keys [history | self] side by side, history values with actions, self
    values without, one masked softmax over 2S columns (float64, no dropout)."""
    own = torch.eye(query.shape[-2], dtype=torch.bool).expand(*earlier.shape[:-1], query.shape[-2])
    scores = torch.cat([query @ keys.transpose(-1, -2), (query * keys).sum(-1).diag_embed()], dim=-1) / query.shape[-1] ** 0.5
    scores = scores.masked_fill(~torch.cat([earlier, own], dim=-1), float("-inf"))
    return torch.softmax(scores, dim=-1) @ torch.cat([values + action_values, values], dim=-2)


@pytest.mark.parametrize("slates", [False, True])
def test_one_matrix_label_safe_attention_equals_side_by_side_keys(slates: bool) -> None:
    """The fast path (one [S, S] score matrix, the diagonal's action share removed afterwards)
    against the side-by-side reference on random inputs: forward and input gradients ≤ 1e-5 (fp32);
    with slates, slate-mates share a slot and never see each other."""
    from rotorec.model.attention import label_safe_attention
    from rotorec.model.inputs import event_slots

    generator = torch.Generator().manual_seed(3)
    batch, heads, length, width = 3, 2, 11, 8
    tensors = [torch.randn(batch, heads, length, width, generator=generator, dtype=torch.float64) for _ in range(4)]
    impression = torch.tensor([[0, 5, 5, 5, 0, 7, 7, 0, 0, 9, 9]] * batch) if slates else None
    slot = event_slots(impression, torch.Size([batch, length]), torch.device("cpu"))
    valid = torch.arange(length)[None, :] < torch.tensor([length, 7, 4])[:, None]
    earlier = ((slot[:, None, :] < slot[:, :, None]) & valid[:, None, :]).unsqueeze(1)
    fast_inputs = [t.float().requires_grad_(True) for t in tensors]
    reference_inputs = [t.clone().requires_grad_(True) for t in tensors]
    fast = label_safe_attention(*fast_inputs, earlier)
    reference = _label_safe_attention_reference(*reference_inputs, earlier)
    assert torch.allclose(fast.double(), reference, atol=1e-5)
    probe = torch.randn(fast.shape, generator=generator, dtype=torch.float64)
    (fast.double() * probe).sum().backward()
    (reference * probe).sum().backward()
    for mine, theirs in zip(fast_inputs, reference_inputs):
        assert torch.allclose(mine.grad.double(), theirs.grad, atol=1e-5)
