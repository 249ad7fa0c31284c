"""The hidden world of the synthetic feed: items, category rhythms, dwell laws, the CTR offset.

Drawn once from the world's own random stream, so the world does not depend on how many users
are simulated or in what order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rotorec.features.localtime import EPOCH_WEEKDAY, SECONDS_PER_DAY, SECONDS_PER_WEEK
from rotorec.features.synth.config import SynthConfig

WORLD_STREAM, USER_STREAM, PILOT_STREAM = 0, 1, 2
TASTE_LOG_RANGE = (-4.0, 3.0)
"""ln(K·θ_uc) is clipped here: a Dirichlet(0.3) taste can be 1e-12, which would swamp the logit."""


def stream(seed: int, kind: int, index: int = 0) -> np.random.Generator:
    """Independent PCG64 stream per (seed, kind, index), as docs/synthetic_feed.md, "Determinism", prescribes."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, kind, index])))


def local_hour_of_week(seconds: np.ndarray, offset_minutes: np.ndarray | int) -> np.ndarray:
    """Hours since local Monday 00:00 (float), from integer seconds."""
    local = np.asarray(seconds, dtype=np.int64) + np.asarray(offset_minutes, dtype=np.int64) * 60
    return np.mod(local + EPOCH_WEEKDAY * SECONDS_PER_DAY, SECONDS_PER_WEEK) / 3600.0


def taste_log(theta_uc: np.ndarray, categories: int) -> np.ndarray:
    """ln(K·θ_uc): 0 for a user indifferent to category c, positive where c is favoured."""
    return np.clip(np.log(categories * np.maximum(theta_uc, 1e-300)), *TASTE_LOG_RANGE)


@dataclass
class World:
    config: SynthConfig
    item_category: np.ndarray  # [items]
    item_quality: np.ndarray  # [items]
    popularity_cdf: np.ndarray  # [items], global popularity draw
    items_by_category: np.ndarray  # item ids sorted by category
    category_cdf: np.ndarray  # [items] cumulative within-category weight, offset by category index
    rhythm_phase: np.ndarray  # [categories, 2] (daily hour, weekly hour) for clicks
    like_rhythm_phase: np.ndarray  # [categories, 2] for likes
    dwell_mu: np.ndarray  # [categories]
    beta0: float

    @classmethod
    def draw(cls, config: SynthConfig) -> World:
        rng = stream(config.seed, WORLD_STREAM)
        k = config.categories
        category_weight = 1.0 / np.arange(1, k + 1) ** config.category_zipf
        category_weight = rng.permutation(category_weight / category_weight.sum())
        item_category = rng.choice(k, size=config.items, p=category_weight)
        item_quality = rng.normal(0.0, config.item_quality_sd, config.items)
        item_weight = rng.permutation(1.0 / np.arange(1, config.items + 1) ** config.item_zipf)
        popularity_cdf = np.cumsum(item_weight) / item_weight.sum()
        order = np.lexsort((np.arange(config.items), item_category))
        category_cdf = np.empty(config.items)
        sorted_category = item_category[order]
        for c in range(k):
            members = sorted_category == c
            weights = item_weight[order][members]
            category_cdf[members] = c + np.cumsum(weights) / weights.sum() if weights.size else c
        world = cls(
            config=config,
            item_category=item_category,
            item_quality=item_quality,
            popularity_cdf=popularity_cdf,
            items_by_category=order,
            category_cdf=category_cdf,
            rhythm_phase=np.column_stack([rng.uniform(0, 24, k), rng.uniform(0, 168, k)]),
            like_rhythm_phase=np.column_stack([rng.uniform(0, 24, k), rng.uniform(0, 168, k)]),
            dwell_mu=rng.normal(config.dwell_mu_mean, config.dwell_mu_sd, k),
            beta0=0.0,
        )
        world.beta0 = world._calibrate_beta0(rng)
        return world

    def rhythm(self, category: np.ndarray, hour_of_week: np.ndarray, phase: np.ndarray | None = None) -> np.ndarray:
        """ρ_c(h) ∈ [-1, 1]: a daily and a weekly cosine with per-category phases."""
        phase = self.rhythm_phase if phase is None else phase
        daily = np.cos(2 * np.pi * (hour_of_week - phase[category, 0]) / 24.0)
        weekly = np.cos(2 * np.pi * (hour_of_week - phase[category, 1]) / 168.0)
        return 0.6 * daily + 0.4 * weekly

    def draw_items(self, rng: np.random.Generator, theta: np.ndarray, count: int) -> np.ndarray:
        """A popularity/taste mix: each slot is a popular item or an item of a liked category."""
        from_taste = rng.random(count) < self.config.taste_share
        popular = np.searchsorted(self.popularity_cdf, rng.random(count), side="right")
        category = rng.choice(len(theta), size=count, p=theta)
        within = np.searchsorted(self.category_cdf, category + rng.random(count), side="right")
        tasteful = self.items_by_category[np.minimum(within, self.config.items - 1)]
        return np.where(from_taste, tasteful, np.minimum(popular, self.config.items - 1))

    def _calibrate_beta0(self, rng: np.random.Generator, samples: int = 20_000) -> float:
        """β0 such that the mean click probability over typical impressions is the target CTR."""
        c = self.config
        theta = rng.dirichlet(np.full(c.categories, c.alpha), size=samples)
        items = np.array([self.draw_items(rng, t, 1)[0] for t in theta[:2000]])
        items = np.resize(items, samples)
        category = self.item_category[items]
        rest = (
            rng.normal(0, c.user_bias_sd, samples)
            + self.item_quality[items]
            + c.beta_taste * taste_log(theta[np.arange(samples), category], c.categories)
            + c.beta_rhythm * self.rhythm(category, rng.uniform(0, 168, samples))
            + c.beta_rec * 0.2
        )
        low, high = -15.0, 5.0
        for _ in range(60):
            mid = (low + high) / 2
            if np.mean(1 / (1 + np.exp(-(mid + rest)))) < c.target_ctr:
                low = mid
            else:
                high = mid
        return (low + high) / 2
