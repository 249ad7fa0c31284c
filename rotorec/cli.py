"""The `rotorec` command: a thin dispatcher over subcommands that live in their own packages.

Each package exposes `register(subparsers)`; the subcommand's code stays with the stage it
belongs to (features/, training/, service/). Errors a user can fix (our own error types, and
operating-system errors on the paths and ports they named) are printed as one line and exit
with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

# Before torch is imported: let PyTorch's CPU allocator back large tensors with transparent huge
# pages. On machines whose THP mode is `madvise` (the default on many distributions) every
# fresh large tensor otherwise costs a 4 KiB page fault per page; measured here, a 134 MB scan
# output took 75 ms instead of 27 (benchmarks/RESULTS.md). A value set by the user wins.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from rotorec import __version__, logs  # noqa: E402

SUBCOMMAND_PACKAGES = ("rotorec.features.cli", "rotorec.training.cli", "rotorec.service.cli")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(prog="rotorec", description="Sequence ranking for recommender feeds.")
    parser.add_argument("--version", action="version", version=f"rotorec {__version__}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        help="structured log level (JSON lines on stderr)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMAND_PACKAGES:
        importlib.import_module(module).register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from rotorec.features.errors import FeaturesError
    from rotorec.training.config import ConfigError
    from rotorec.training.run import RunError

    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure(args.log_level)
    try:
        return int(args.handler(args) or 0)
    except (FeaturesError, ConfigError, RunError) as exc:
        print(f"rotorec: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # A path or port the user named cannot be used (a file where a folder goes, no
        # permission, a full disk, a port in use): the path and the system's words say what to
        # fix. The traceback stays available with --log-level DEBUG.
        logging.getLogger("rotorec").debug("operating system error", exc_info=True)
        paths = [str(name) for name in (exc.filename, exc.filename2) if name is not None]
        where = f"{' -> '.join(paths)}: " if paths else ""
        print(f"rotorec: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rotorec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
