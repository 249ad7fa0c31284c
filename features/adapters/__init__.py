"""Input format adapters: each turns one public log format into a canonical LogSource."""

from __future__ import annotations

from collections.abc import Callable

from rotorec.features.source import LogSource

ADAPTERS: dict[str, str] = {
    "events": "rotorec.features.adapters.events:events_source",
    "movielens": "rotorec.features.adapters.movielens:movielens_source",
    "mind": "rotorec.features.adapters.mind:mind_source",
    "amazon-seq": "rotorec.features.adapters.amazon:amazon_sequence_source",
}


def adapter(name: str) -> Callable[..., LogSource]:
    """The source builder for a format name (imported lazily: each pulls only what it needs)."""
    import importlib

    module_name, function = ADAPTERS[name].split(":")
    return getattr(importlib.import_module(module_name), function)
