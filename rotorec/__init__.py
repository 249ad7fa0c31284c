"""rotorec: a sequence ranking service for recommender feeds (the `rotorec` command lives here)."""

__version__ = "0.1.0"
