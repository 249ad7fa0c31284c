"""RotRNN and FP-RNN against their definitions (docs/mixers.md): state normalisation,
time-conditioned telescoping, the folded orthogonal basis, the dense fixed point, streaming."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rotorec.features.dataset import SequenceDataset
from rotorec.model.config import ModelConfig
from rotorec.model.context import MixerContext
from rotorec.model.inputs import TimeInputs
from rotorec.model.fprnn import FixedPointRNN
from rotorec.model.inputs import Events, batch_time
from rotorec.model.kernels import linear_scan
from rotorec.model.ranker import Ranker
from rotorec.model.rotrnn import RotRNN
from rotorec.model.scoring import candidate_logits


@pytest.fixture(scope="module")
def batch(tiny_prepared: Path):
    dataset = SequenceDataset(tiny_prepared, "valid")
    return dataset.schema, dataset.__getitems__(list(range(4)))


def _config(schema, **overrides) -> ModelConfig:
    return ModelConfig.from_feature_schema(
        schema, d_model=32, heads=2, dropout=0.0, siren={"branches": ["timestamp", "cyclic"], "hidden": 16}, **overrides
    )


def _context(model: Ranker, batch, slots_by_position: bool = True) -> MixerContext:
    """The batch's context; with `slots_by_position`, every event is its own slot."""
    time = batch_time(batch)
    if slots_by_position:
        time.slot = torch.arange(batch.item.shape[1]).expand_as(batch.item)
    return model.context(time, batch.valid)


def _slice(context: MixerContext, part: slice) -> MixerContext:
    """Events `part` of a context, as a continuation chunk (slots stay absolute)."""
    t = context.time
    cut = lambda x: x[:, part]  # noqa: E731
    time = TimeInputs(
        slot=cut(t.slot),
        seconds=cut(t.seconds),
        has_time=cut(t.has_time),
        second_of_day=cut(t.second_of_day),
        day_of_week=cut(t.day_of_week),
        categorical={k: cut(v) for k, v in t.categorical.items()},
    )
    sliced = lambda x: None if x is None else x[:, :, part]  # noqa: E731
    return MixerContext(time=time, valid=cut(context.valid), cos=sliced(context.cos), sin=sliced(context.sin))


def _relative(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value - reference).norm() / reference.norm())


def test_rotrnn_state_norm_stays_near_one_under_white_noise() -> None:
    """ξ normalisation: per-head E‖x_t‖² = 1 − γ^{2(t+1)} → 1; checked over 4,096 steps."""
    torch.manual_seed(0)
    config = ModelConfig(item_vocab_size=10, action_vocab_size=3, tasks=["click"], d_model=32, heads=2)
    mixer = RotRNN(config)
    steps, batch = 4096, 32
    value = torch.randn(batch, steps, 32)  # white noise, E uuᵀ = I
    input_matrix, _, trace = mixer.folded()
    with torch.no_grad():
        gate, inputs = mixer.recurrence(value, torch.ones(batch, steps), None, input_matrix, trace)
        states, _ = linear_scan(gate, inputs)
    per_head = states.abs().square().unflatten(-1, (mixer.heads, mixer.head_size // 2)).sum(-1)
    mean_norm = per_head.mean(dim=(0, 2))  # over sequences and heads, per step
    warmed = mean_norm[2048:]
    assert warmed.min() >= 0.9 and warmed.max() <= 1.1, (float(warmed.min()), float(warmed.max()))


def test_time_conditioned_rotation_telescopes_to_the_siren_rope_angle(batch) -> None:
    """Event i reaches the state at j rotated by exactly (j − i)θ + Θ_j − Θ_i, the SIREN-RoPE
    angles of j and i, and decayed by Π ρ_k (the telescoping product, docs/mixers.md, "Time-conditioned RotRNN")."""
    schema, data = batch
    torch.manual_seed(1)
    config = _config(schema, mixers=["rotrnn", "rotrnn"], rotrnn={"time_conditioned": True, "heads": 4, "state": 8})
    model = Ranker(config).eval()
    mixer = model.blocks[0].mixer
    context = _context(model, data)
    i, j = 3, 11
    value = torch.zeros(data.item.shape[0], data.item.shape[1], config.d_model)
    value[:, i] = torch.randn(data.item.shape[0], config.d_model)
    input_matrix, _, trace = mixer.folded()
    seconds, has_time = context.time.seconds, context.time.has_time
    earlier = torch.cat([seconds[:, :1], seconds[:, :-1]], dim=1)
    exponent = mixer.exponent(context, earlier, torch.cat([has_time[:, :1], has_time[:, :-1]], dim=1))
    with torch.no_grad():
        phase = mixer.phase(context)
        gate, inputs = mixer.recurrence(value, exponent, phase, input_matrix, trace)
        states, _ = linear_scan(gate, inputs)
        h = states * phase  # the state in the unrotated basis
        _, unrotated_inputs = mixer.recurrence(value, exponent, None, input_matrix, trace)
        rho, _ = mixer.decay(exponent[:, i + 1 : j + 1], trace)
        angles = model.encoding.angles(context.time).to(torch.float64)
    lanes = torch.arange(mixer.width // 2) % (config.head_dim // 2)
    relative = (angles[:, j] - angles[:, i])[:, lanes] + (j - i) * mixer.theta.detach().flatten().to(torch.float64)
    expected = torch.polar(mixer.per_pair(rho).prod(dim=1).to(torch.float64), relative) * h[:, i].to(torch.complex128)
    assert _relative(h[:, i], unrotated_inputs[:, i]) <= 1e-6  # event i enters as ξ B′ v_i
    assert _relative(h[:, j].to(torch.complex128), expected) <= 1e-4


def test_orthogonal_basis_is_folded_into_b_and_c(batch) -> None:
    """P = expm(M − Mᵀ) is a reparametrisation: the same as a P-free mixer with B′ = PᵀB, C′ = C·P."""
    schema, data = batch
    torch.manual_seed(2)
    rotating = Ranker(_config(schema, mixers=["rotrnn", "attention"], rotrnn={"orthogonal": True})).eval()
    plain = Ranker(_config(schema, mixers=["rotrnn", "attention"])).eval()
    state = {k: v for k, v in rotating.state_dict().items() if not k.endswith("mixer.skew")}
    plain.load_state_dict(state)
    with torch.no_grad():
        input_matrix, readout, _ = rotating.blocks[0].mixer.folded()
        plain.blocks[0].mixer.input_matrix.copy_(input_matrix.view_as(plain.blocks[0].mixer.input_matrix))
        plain.blocks[0].mixer.readout.copy_(readout)
    encode = lambda m: m.encode(data.item, data.categorical, data.action, batch_time(data), data.valid).hidden  # noqa: E731
    assert (encode(rotating) - encode(plain)).abs().max() <= 1e-5


def _dense_fixed_point(mixer: FixedPointRNN, z: torch.Tensor, value: torch.Tensor, log_decay: torch.Tensor):
    """The recurrence FP-RNN targets, solved one event at a time with dense matrices:
    (Λ + (I − Λ)Q_t) h_t = Λ h_{t−1} + (I − Λ)Q_t β_t v_t, y_t = c_t ⊙ h_t."""
    batch, steps, n = value.shape
    state = torch.zeros(batch, n, dtype=z.dtype)
    output = torch.zeros_like(state)
    states, outputs = [], []
    identity = torch.eye(n, dtype=z.dtype).expand(batch, n, n)
    for t in range(steps):
        gates = mixer.gates(z[:, t], output, log_decay[:, t])
        mixer_matrix = torch.stack([gates.mix(identity[:, :, k]) for k in range(n)], dim=-1)  # columns Q e_k
        decay = gates.decay
        system = torch.diag_embed(decay) + (1 - decay).unsqueeze(-1) * mixer_matrix
        rhs = decay * state + (1 - decay) * gates.mix(gates.input_gate * value[:, t])
        state = torch.linalg.solve(system, rhs)
        output = gates.output_gate * state
        states.append(state)
        outputs.append(output)
    return torch.stack(states, 1), torch.stack(outputs, 1)


def test_fprnn_converges_to_the_dense_recurrence(batch) -> None:
    schema, data = batch
    torch.manual_seed(3)
    config = _config(
        schema, mixers=["fprnn", "attention"], encoding="none", fprnn={"tolerance": 1e-13, "max_iterations_eval": 400, "state": 12}
    )
    model = Ranker(config).double().eval()
    mixer = model.blocks[0].mixer
    steps = 24
    context = _slice(_context(model, data), slice(0, steps))
    z = torch.randn(data.item.shape[0], steps, config.d_model, dtype=torch.float64)
    action = data.action[:, :steps]
    with torch.no_grad():
        y, cache = mixer(z, action, context)
        value = mixer.value(z) + mixer.action_values(action)
        log_decay = mixer.log_decay(z, context, None, None)
        states, outputs = _dense_fixed_point(mixer, z, value, log_decay)
        previous_state = torch.cat([torch.zeros_like(states[:, :1]), states[:, :-1]], 1)
        previous_output = torch.cat([torch.zeros_like(outputs[:, :1]), outputs[:, :-1]], 1)
        expected = mixer.read(z, previous_state, previous_output, log_decay)
    assert _relative(cache.state, states[:, -1]) <= 1e-8
    assert _relative(y, expected) <= 1e-8


@pytest.mark.parametrize("kind,tolerance", [("rotrnn", 1e-5), ("fprnn", 1e-3)])
def test_streaming_steps_equal_a_full_forward(batch, kind: str, tolerance: float) -> None:
    """Prefill with a scan, then one event at a time from the cache = one pass over everything."""
    schema, data = batch
    torch.manual_seed(4)
    config = _config(
        schema,
        mixers=[kind, "attention"],
        rotrnn={"time_conditioned": True},
        fprnn={"time_conditioned": True, "tolerance": 1e-4, "max_iterations_eval": 100},
    )
    model = Ranker(config).eval()
    mixer = model.blocks[0].mixer
    length = int(data.lengths.min())
    context = _slice(_context(model, data), slice(0, length))
    z = torch.randn(data.item.shape[0], length, config.d_model)
    action = data.action[:, :length]
    with torch.no_grad():
        full, _ = mixer(z, action, context)
        prefix = length - 6
        pieces, cache = [], None
        piece, cache = mixer(z[:, :prefix], action[:, :prefix], _slice(context, slice(0, prefix)))
        pieces.append(piece)
        for t in range(prefix, length):
            piece, cache = mixer(z[:, t : t + 1], action[:, t : t + 1], _slice(context, slice(t, t + 1)), cache)
            pieces.append(piece)
    assert _relative(torch.cat(pieces, 1), full) <= tolerance


@pytest.mark.parametrize("mixers", [["rotrnn", "fprnn"], ["fprnn", "attention"]])
def test_every_parameter_of_a_recurrent_stack_learns(batch, mixers: list[str]) -> None:
    schema, data = batch
    torch.manual_seed(5)
    model = Ranker(
        _config(schema, mixers=mixers, rotrnn={"time_conditioned": True, "orthogonal": True}, fprnn={"time_conditioned": True})
    ).train()
    _, logits, _, _ = model(data.item, data.categorical, data.action, batch_time(data), data.valid)
    logits.sum().backward()
    silent = [
        name
        for name, p in model.named_parameters()
        if (p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0)
        and not name.startswith("encoding.category")
        and "padding" not in name
    ]
    assert not silent, silent


def _events(data, row: int, part: slice) -> Events:
    """Events `part` of one window as a serving history (no impressions: each its own slot)."""
    pick = lambda x: x[row : row + 1, part]  # noqa: E731
    return Events(
        item=pick(data.item),
        categorical={k: pick(v) for k, v in data.categorical.items()},
        valid=pick(data.valid),
        action=pick(data.action),
        timestamp=pick(data.timestamp),
        has_time=pick(data.has_time),
        tz_offset_minutes=pick(data.tz_offset_minutes),
    )


@pytest.mark.parametrize("mixers,tolerance", [(["rotrnn", "rotrnn"], 1e-5), (["rotrnn", "fprnn"], 1e-3)])
def test_a_history_continued_from_caches_scores_like_the_whole_history(batch, mixers, tolerance: float) -> None:
    """What the service's per-user state does: encode a prefix once, later read only the new
    events from the caches; candidates score as with the whole history re-encoded."""
    schema, data = batch
    torch.manual_seed(6)
    model = Ranker(
        _config(
            schema,
            mixers=mixers,
            rotrnn={"time_conditioned": True},
            fprnn={"time_conditioned": True, "tolerance": 1e-4, "max_iterations_eval": 100},
        )
    ).eval()
    length = int(data.lengths[0])
    candidates = Events(
        item=data.item[1:2, :7], categorical={k: v[1:2, :7] for k, v in data.categorical.items()}, valid=torch.ones(1, 7, dtype=torch.bool)
    )
    request, zone = data.timestamp[0, length - 1 : length] + 600, data.tz_offset_minutes[0, :1]
    whole, _ = candidate_logits(model, _events(data, 0, slice(0, length)), candidates, request, zone)
    _, prefix = candidate_logits(model, _events(data, 0, slice(0, length - 5)), candidates, request, zone)
    continued, _ = candidate_logits(model, _events(data, 0, slice(length - 5, length)), candidates, request, zone, caches=prefix.layers)
    assert _relative(continued, whole) <= tolerance
    with pytest.raises(ValueError, match="every layer is recurrent"):
        attention = Ranker(_config(schema, mixers=["rotrnn", "attention"])).eval()
        candidate_logits(attention, _events(data, 0, slice(0, 3)), candidates, request, zone, caches=prefix.layers)
