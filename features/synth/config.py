"""Knobs of the synthetic feed, with the presets of docs/synthetic_feed.md, "Presets and knobs".

The coefficient defaults are our choices (the feed's design fixes only the structure, the presets, the
≈5 % CTR and β_rhythm = β_rec = 1, τ = 12 h); they were set so that time carries real signal
(the time-blind oracle is clearly worse) while taste and quality still dominate.
"""

from __future__ import annotations

from pydantic import Field

from rotorec.features.strict import StrictModel

GENERATOR_VERSION = "1.0"

PRESETS: dict[str, dict] = {
    "tiny": {"users": 50, "items": 400, "days": 7},
    "small": {"users": 2_000, "items": 4_000, "days": 28},
    "large": {"users": 20_000, "items": 40_000, "days": 56},
}


class SynthConfig(StrictModel):
    users: int = Field(2_000, ge=1)
    items: int = Field(4_000, ge=2)
    categories: int = Field(16, ge=1)
    days: int = Field(28, ge=1)
    start: str = Field("2024-01-01", description="first day (UTC); a Monday, so weeks align")
    seed: int = 0
    slate_size: int = Field(20, ge=1)
    visits_per_day: float = Field(1.0, gt=0, description="mean visits per user and day")
    taste_share: float = Field(0.5, ge=0, le=1, description="share of a slate drawn from the user's taste")
    alpha: float = Field(0.3, gt=0, description="Dirichlet concentration of user taste")
    category_zipf: float = Field(1.0, description="Zipf exponent of category popularity")
    item_zipf: float = Field(0.8, description="Zipf exponent of an item's global popularity weight")
    target_ctr: float = Field(0.05, gt=0, lt=1)
    user_bias_sd: float = Field(0.5, ge=0, description="sd of the user's click bias a_u")
    item_quality_sd: float = Field(0.5, ge=0, description="sd of the item's quality b_i")
    beta_taste: float = Field(0.6, description="click weight of the taste term τ_uc")
    beta_rhythm: float = Field(1.0, description="click weight of the category's hour-of-week rhythm")
    beta_rec: float = Field(1.0, description="click weight of the recency term r_uc")
    tau_hours: float = Field(12.0, gt=0, description="decay time of the recency term")
    gamma0: float = Field(-0.5, description="like logit offset, given a click")
    gamma_taste: float = Field(0.5, description="like weight of the taste term")
    gamma_rhythm: float = Field(0.8, description="like weight of the like rhythm")
    dwell_mu_mean: float = Field(3.0, description="mean of the categories' log-dwell means μ_c")
    dwell_mu_sd: float = Field(0.4, ge=0, description="sd of the categories' log-dwell means μ_c")
    dwell_delta: float = Field(0.3, description="log-dwell shift per unit of taste (δ)")
    dwell_sigma: float = Field(0.8, gt=0, description="sd of log dwell around its mean (σ)")
    dwell_threshold_shift: float = Field(0.5, description="ln T_c = mu_c + shift")
    off_utc_fraction: float = Field(0.5, ge=0, le=1)
    expose_timezone: bool = True
    seconds_per_rank: int = Field(10, ge=0, description="event time = request time + rank * this")

    @classmethod
    def from_preset(cls, preset: str = "small", timeless: bool = False, **overrides: object) -> SynthConfig:
        values: dict = dict(PRESETS[preset])
        values.update({k: v for k, v in overrides.items() if v is not None})
        if timeless:
            values.update(beta_rhythm=0.0, beta_rec=0.0, gamma_rhythm=0.0)
        return cls(**values)
