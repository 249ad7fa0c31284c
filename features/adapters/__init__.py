"""Input format adapters: each turns one public log format into a canonical LogSource."""

from __future__ import annotations

from collections.abc import Callable

from features.source import LogSource

ADAPTERS: dict[str, str] = {
    "events": "features.adapters.events:events_source",
    "movielens": "features.adapters.movielens:movielens_source",
    "mind": "features.adapters.mind:mind_source",
    "amazon-seq": "features.adapters.amazon:amazon_sequence_source",
}


def adapter(name: str) -> Callable[..., LogSource]:
    """The source builder for a format name (imported lazily: each pulls only what it needs)."""
    import importlib

    module_name, function = ADAPTERS[name].split(":")
    return getattr(importlib.import_module(module_name), function)
