"""The ranker's configuration: validated, saved with every checkpoint, enough to rebuild exactly.

Vocabulary sizes and tasks come from the prepared data's FeatureSchema (`from_feature_schema`),
so a model is always built for the data it will read.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rotorec.features.strict import StrictModel

Encoding = Literal["none", "rope", "to_rope", "siren_rope"]
MixerKind = Literal["attention", "rotrnn", "fprnn"]
SirenBranch = Literal["timestamp", "cyclic", "categorical"]


class CategoricalField(StrictModel):
    vocab_size: int = Field(ge=2)
    max_values: int = Field(1, ge=1)


class SirenConfig(StrictModel):
    """SIREN-RoPE angle network (docs/encodings.md, "The SIREN-RoPE angle")."""

    branches: list[SirenBranch] = Field(default_factory=lambda: ["timestamp", "cyclic"])
    sine_branch: bool = True
    mlp_branch: bool = True
    ordinal: bool = True
    hidden: int = Field(64, ge=1)
    depth: int = Field(2, ge=1, description="hidden layers per branch")
    omega0: float = 10.0
    omega_init: float = Field(3.141592653589793, description="initial per-pair frequency scale ω_s")
    reference_time: int = Field(1_704_067_200, description="t_ref of the long-range offset (Unix s)")
    categorical_fields: list[str] | None = Field(None, description="fields rotating angles (default: all)")


class RecurrentDecayConfig(StrictModel):
    """How fast a recurrent mixer forgets, per event and, when time-conditioned, per elapsed time
    (docs/mixers.md, "Time-conditioned RotRNN"). Each recurrent mixer has its own copy."""

    gamma_min: float = Field(0.9, gt=0, lt=1, description="slowest initial per-event decay")
    gamma_max: float = Field(0.999, gt=0, lt=1, description="fastest initial per-event decay")
    time_conditioned: bool = Field(False, description="decay γ^(κ+Δt/τ) (RotRNN also rotates by SIREN-RoPE angle steps)")
    kappa: float = Field(1.0, ge=0, description="per-event decay exponent κ")
    time_unit: int = Field(86_400, ge=1, description="τ in seconds")
    max_elapsed: int = Field(30 * 86_400, ge=0, description="Δt is clipped to this many seconds")

    @model_validator(mode="after")
    def _ordered_decays(self) -> RecurrentDecayConfig:
        if self.gamma_min > self.gamma_max:
            raise ValueError("gamma_min must not exceed gamma_max")
        return self


class RotRnnConfig(RecurrentDecayConfig):
    """RotRNN mixer (docs/mixers.md, "RotRNN"): H heads of N-dim rotating, decaying state."""

    heads: int = Field(16, ge=1)
    state: int = Field(8, ge=2, description="state size per head (even)")
    orthogonal: bool = Field(False, description="learn P = expm(M − Mᵀ) (folded into B and C)")
    max_phase: float = Field(6.283185307179586, gt=0, description="θ ~ U[0, max_phase]")

    @model_validator(mode="after")
    def _even_state(self) -> RotRnnConfig:
        if self.state % 2:
            raise ValueError(f"rotrnn.state must be even (pairs of rotating coordinates), got {self.state}")
        return self


class FpRnnConfig(RecurrentDecayConfig):
    """Fixed-point RNN mixer (docs/mixers.md, "Fixed-Point RNN"): diagonal scans iterated to the fixed
    point of a dense recurrence with a Householder channel mixer."""

    state: int | None = Field(None, ge=1, description="state width (default d_model)")
    reflections: int = Field(2, ge=1, description="Householder reflections r")
    max_iterations_train: int = Field(16, ge=1)
    max_iterations_eval: int = Field(8, ge=1)
    tolerance: float = Field(0.1, gt=0, description="stop when the residual quantile is below this")
    quantile: float = Field(0.9, gt=0, le=1, description="batch quantile of per-sequence residuals (training)")
    damping: float = Field(1.0, gt=0, le=1)


class NextItemConfig(StrictModel):
    """Generative retrieval head: a softmax over the catalogue, scored against the (tied) item
    embeddings. `full` scores every item each step; `sampled` draws a shared pool of negatives
    per step (for catalogues too large for `full`), with log-Q correction (model/losses.py)."""

    loss: Literal["full", "sampled"] = "full"
    similarity: Literal["dot", "cosine"] = "dot"
    temperature: float = Field(0.05, gt=0, description="cosine logits are divided by τ (dot: unused)")
    query_projection: bool = Field(False, description="a linear map from the hidden state to the query")
    repeat_bias: bool = Field(
        False, description="learn a per-query logit offset for items already in the query's history (model/repeats.py)"
    )
    negatives: Literal["uniform", "popularity", "in_batch"] = Field("uniform", description="sampled loss only")
    num_negatives: int = Field(1024, ge=1, description="pool size per step (sampled loss)")
    popularity_alpha: float = Field(0.75, ge=0, description="Q ∝ (count + 1)^α for popularity negatives")
    log_q_correction: bool = True
    weight: float = Field(1.0, ge=0)


class ModelConfig(StrictModel):
    item_vocab_size: int = Field(ge=3)
    action_vocab_size: int = Field(ge=2)
    categorical: dict[str, CategoricalField] = Field(default_factory=dict)
    tasks: list[str] = Field(default_factory=list)
    d_model: int = Field(128, ge=2)
    heads: int = Field(4, ge=1)
    layers: int = Field(2, ge=1)
    ffn_multiplier: int = Field(4, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    max_seq_len: int = Field(200, ge=1)
    positions: Literal["none", "learned"] = Field(
        "none", description="learned absolute slot embeddings added to the tokens (SASRec's), beside any rotation"
    )
    embedding_scale: bool = Field(False, description="multiply content embeddings by √d (SASRec's)")
    item_age: bool = Field(
        False, description="add an embedding of the item's age (time since the log first showed it) to its tokens (model/item_age.py)"
    )
    item_dropout: float = Field(0.0, ge=0, lt=1, description="training only: read this fraction of item ids as OOV (model/cold_items.py)")
    oov_untrained_items: bool = Field(False, description="read items that never occur in the training split as OOV (model/cold_items.py)")
    encoding: Encoding = "siren_rope"
    rope_base: float = Field(100_000.0, gt=1)
    mixers: list[MixerKind] | None = None
    siren: SirenConfig = Field(default_factory=SirenConfig)
    rotrnn: RotRnnConfig = Field(default_factory=RotRnnConfig)
    fprnn: FpRnnConfig = Field(default_factory=FpRnnConfig)
    next_item: NextItemConfig | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        if self.d_model % self.heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by heads {self.heads}")
        if (self.d_model // self.heads) % 2:
            raise ValueError("rotary encodings need an even head dimension")
        if self.mixers is None:
            self.mixers = ["attention"] * self.layers
        if len(self.mixers) != self.layers:
            raise ValueError(f"mixers lists {len(self.mixers)} entries for {self.layers} layers")
        fields = self.siren.categorical_fields
        if fields is not None and set(fields) - set(self.categorical):
            raise ValueError(f"siren.categorical_fields {sorted(set(fields) - set(self.categorical))} are not model fields")
        if not self.tasks and self.next_item is None:
            raise ValueError("the model needs at least one task or the next-item head")
        return self

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads

    def angle_fields(self) -> list[str]:
        if "categorical" not in self.siren.branches:
            return []
        return list(self.siren.categorical_fields if self.siren.categorical_fields is not None else self.categorical)

    @classmethod
    def from_feature_schema(cls, schema, **overrides: object) -> ModelConfig:
        """Vocabulary sizes and tasks from prepared data (features.artifacts.FeatureSchema)."""
        values: dict = {
            "item_vocab_size": schema.item_vocab_size,
            "action_vocab_size": schema.action_vocab_size,
            "categorical": {
                name: {"vocab_size": info.vocab_size, "max_values": info.max_values} for name, info in schema.categorical.items()
            },
            "tasks": list(schema.tasks),
            "max_seq_len": schema.max_len,
        }
        values.update(overrides)
        return cls.model_validate(values)
