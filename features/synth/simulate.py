"""One simulated user: taste, time zone, visits, slates and labels with their true probabilities.

Each user has its own random stream, so the feed is identical whatever the number of workers or
the order users are simulated in. Only the recency state (hours since the last click in each
category) is sequential; everything else is drawn vectorised for all of a user's visits.
"""

from __future__ import annotations

import math

import numpy as np

from rotorec.features.localtime import SECONDS_PER_DAY
from rotorec.features.synth.world import PILOT_STREAM, USER_STREAM, World, local_hour_of_week, stream, taste_log

OFF_UTC_OFFSETS = np.array([-480, -420, -360, -300, -240, -180, 60, 120, 180, 330, 480, 540, 600], dtype=np.int16)
_erfc = np.frompyfunc(math.erfc, 1, 1)


def daily_activity(local_hour: np.ndarray) -> np.ndarray:
    """Relative visit intensity over the local day: a morning and an evening peak, in (0, 1]."""
    curve = 0.25 + np.exp(-((local_hour - 8.0) ** 2) / 8.0) + np.exp(-((local_hour - 20.5) ** 2) / 6.0)
    return curve / 1.3


_MEAN_ACTIVITY = float(daily_activity(np.linspace(0, 24, 24 * 60, endpoint=False)).mean())


def _visit_times(rng: np.random.Generator, start: int, days: int, rate_per_day: float, offset: int, tail: int) -> np.ndarray:
    """A Poisson process shaped by the local daily curve (by thinning), sorted, in seconds.

    Visits stop `tail` seconds before the period ends so a slate's last event stays inside it
    (otherwise a few events would open an extra, nearly empty calendar day)."""
    proposals = rng.poisson(rate_per_day * days / _MEAN_ACTIVITY)
    times = start + np.sort(rng.integers(0, days * SECONDS_PER_DAY - tail, proposals))
    local_hour = np.mod(local_hour_of_week(times, offset), 24.0)
    return times[rng.random(proposals) < daily_activity(local_hour)]


def _unique_slates(draws: np.ndarray, slate_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First `slate_size` distinct items of each row: (row index, rank) of the kept slots."""
    order = np.argsort(draws, axis=1, kind="stable")
    ordered = np.take_along_axis(draws, order, axis=1)
    repeated_sorted = np.zeros_like(draws, dtype=bool)
    repeated_sorted[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    repeated = np.empty_like(repeated_sorted)
    np.put_along_axis(repeated, order, repeated_sorted, axis=1)
    fresh = ~repeated
    rank = np.cumsum(fresh, axis=1) - 1
    keep = fresh & (rank < slate_size)
    rows, cols = np.nonzero(keep)
    return rows, cols, rank[rows, cols]


def simulate_user(world: World, user: int, start: int, kind: int = USER_STREAM) -> dict[str, np.ndarray]:
    c = world.config
    rng = stream(c.seed, kind, user)
    theta = rng.dirichlet(np.full(c.categories, c.alpha))
    bias = rng.normal(0.0, c.user_bias_sd)
    rate = rng.gamma(2.0, c.visits_per_day / 2.0)
    offset = int(rng.choice(OFF_UTC_OFFSETS)) if rng.random() < c.off_utc_fraction else 0

    visits = _visit_times(rng, start, c.days, rate, offset, tail=c.slate_size * c.seconds_per_rank)
    n_visits = len(visits)
    draws = world.draw_items(rng, theta, n_visits * 2 * c.slate_size).reshape(n_visits, 2 * c.slate_size)
    visit, slot, rank = _unique_slates(draws, c.slate_size)
    item = draws[visit, slot]
    category = world.item_category[item]
    request_time = visits[visit]
    hour = local_hour_of_week(request_time, offset)
    taste = taste_log(theta[category], c.categories)
    rhythm = world.rhythm(category, hour)
    static_logit = world.beta0 + bias + world.item_quality[item] + c.beta_taste * taste + c.beta_rhythm * rhythm
    like_share = 1 / (
        1 + np.exp(-(c.gamma0 + c.gamma_taste * taste + c.gamma_rhythm * world.rhythm(category, hour, world.like_rhythm_phase)))
    )
    dwell_mu = world.dwell_mu[category] + c.dwell_delta * taste
    log_threshold = world.dwell_mu[category] + c.dwell_threshold_shift
    long_share = 0.5 * _erfc((log_threshold - dwell_mu) / (c.dwell_sigma * math.sqrt(2))).astype(np.float64)

    event_time = request_time + rank * c.seconds_per_rank
    uniform_click, uniform_like = rng.random(len(item)), rng.random(len(item))
    dwell_noise = rng.standard_normal(len(item))
    recency = np.zeros(len(item))
    last_click = np.full(c.categories, -np.inf)
    bounds = np.searchsorted(visit, np.arange(n_visits + 1))
    for k in range(n_visits):
        part = slice(bounds[k], bounds[k + 1])
        seen = last_click[category[part]]
        hours = (visits[k] - seen) / 3600.0
        recency[part] = np.where(np.isfinite(seen), np.exp(-hours / c.tau_hours), 0.0)
        p = 1 / (1 + np.exp(-(static_logit[part] + c.beta_rec * recency[part])))
        clicked = uniform_click[part] < p
        if clicked.any():
            np.maximum.at(last_click, category[part][clicked], event_time[part][clicked].astype(np.float64))

    p_click = 1 / (1 + np.exp(-(static_logit + c.beta_rec * recency)))
    click = uniform_click < p_click
    like = click & (uniform_like < like_share)
    dwell = np.where(click, np.exp(dwell_mu + c.dwell_sigma * dwell_noise), np.nan)
    long_dwell = click & (np.log(np.where(click, dwell, 1.0)) >= log_threshold)
    return {
        "user_id": np.full(len(item), user, dtype=np.int64),
        "item_id": item.astype(np.int64),
        "timestamp": event_time.astype(np.int64),
        "impression_id": user * 1_000_000 + visit.astype(np.int64),
        "tz_offset_minutes": np.full(len(item), offset, dtype=np.int16),
        "category": category.astype(np.int64),
        "click": click.astype(np.int8),
        "like": like.astype(np.int8),
        "long_dwell": long_dwell.astype(np.int8),
        "dwell_s": dwell.astype(np.float32),
        "p_click": p_click,
        "p_like": p_click * like_share,
        "p_long_dwell": p_click * long_share,
        # Hidden terms, for diagnostics only (never written to the log).
        "_rhythm": rhythm,
        "_recency": recency,
        "_theta": theta,
        "_bias": np.array([bias]),
        "_offset": np.array([offset]),
    }


def calibrate_ctr(world: World, start: int, pilot_users: int = 200, rounds: int = 3) -> None:
    """Shift β0 until pilot users (their own random stream) click at the target rate.

    The world's first guess ignores how slates favour a user's tastes and how recency compounds;
    a few Newton-like steps on the logit of the observed CTR fix that within a few 0.1 %.
    """
    target = np.log(world.config.target_ctr / (1 - world.config.target_ctr))
    for _ in range(rounds):
        clicks = [simulate_user(world, u, start, kind=PILOT_STREAM)["p_click"] for u in range(pilot_users)]
        observed = float(np.clip(np.concatenate(clicks).mean(), 1e-6, 1 - 1e-6))
        world.beta0 += target - np.log(observed / (1 - observed))
