"""rotorec: a sequence ranking service for recommender feeds (the `rotorec` command lives here).

The version is read from the installed distribution, so pyproject.toml is the one place it is written.
"""

from importlib.metadata import version

__version__ = version("rotorec")
