"""`rotorec serve`: the scoring API over a run folder, with uvicorn.

The flags are a view of `ServiceSettings`: each one names the setting it sets and takes its help
from it, and a flag left out is left out of the settings, whose own default (or environment
value) then holds. Defaults are declared once, in service/settings.py.
"""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from typing import get_args

from pydantic import ValidationError
from pydantic_settings import SettingsError

from rotorec.features.strict import first_validation_error
from rotorec.service.settings import ServiceSettings
from rotorec.training.config import ConfigError

FLAGS = {  # flag -> (setting, argparse options besides the help)
    "--run": ("run", {"type": Path, "required": True}),
    "--runs-root": ("runs_root", {"type": Path}),
    "--host": ("host", {}),
    "--port": ("port", {"type": int}),
    "--device": ("device", {"choices": get_args(ServiceSettings.model_fields["device"].annotation)}),
    "--max-batch-size": ("max_batch_size", {"type": int}),
    "--max-wait-ms": ("max_wait_ms", {"type": float}),
    "--threads": ("threads", {"type": int}),
    "--fail-fast": ("fail_fast", {"action": "store_true"}),
    "--drain": ("drain_s", {"type": float, "metavar": "SECONDS"}),
    "--shutdown-timeout": ("shutdown_timeout_s", {"type": float, "metavar": "SECONDS"}),
}


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "serve",
        help="serve a trained run over HTTP (FastAPI)",
        description="Score feeds with a run folder: /v1/rank, Open Inference Protocol v2, /metrics, /docs. "
        "Every setting can also come from ROTOREC_<SETTING> or a file named by "
        "ROTOREC_<SETTING>_FILE (bearer tokens: ROTOREC_SCORING_TOKENS, "
        "ROTOREC_ADMIN_TOKENS); a flag wins.",
    )
    for flag, (name, options) in FLAGS.items():
        p.add_argument(flag, dest=name, default=argparse.SUPPRESS, help=_help(name), **options)
    p.add_argument(
        "--secrets-dir", type=Path, help="a folder of secret files, each named like the variable it stands for (rotorec_admin_tokens)"
    )
    p.add_argument(
        "--sample-feed",
        type=Path,
        metavar="PREPARED",
        help="start, score the first test feed of a prepared folder, print the ranking, and exit",
    )
    p.set_defaults(handler=_run_serve)


def _help(name: str) -> str:
    field = ServiceSettings.model_fields[name]
    default = field.get_default(call_default_factory=True)
    if field.is_required() or default is None or isinstance(default, bool):
        return field.description
    return f"{field.description} (default: {default})"


def read_settings(args: argparse.Namespace) -> ServiceSettings:
    """The settings from flags, files and the environment; a bad value is a one-line ConfigError
    that names the setting and where it can come from, since an environment variable set in a
    deployment manifest is far from the traceback pydantic would print."""
    flags = {name: getattr(args, name) for name, _ in FLAGS.values() if hasattr(args, name)}
    try:
        return ServiceSettings(_secrets_dir=args.secrets_dir, **flags)
    except ValidationError as exc:
        where, message = first_validation_error(exc)
        setting = where.split(".")[0]
        sources = [flag for flag, (name, _) in FLAGS.items() if name == setting] + [f"ROTOREC_{setting.upper()}"]
        raise ConfigError(f"serve setting {where}: {message} (set by {' or '.join(sources)})") from exc
    except SettingsError as exc:
        raise ConfigError(f"serve settings: {exc}") from exc


def _run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from rotorec.service.app import create_app
    from rotorec.service.server import DrainingServer

    # uvicorn re-raises the signal it stopped on; once drained, a clean exit (status 0) is what
    # orchestrators expect, so the re-raised signal is ignored.
    signal.signal(signal.SIGTERM, lambda *_: None)
    settings = read_settings(args)
    if args.sample_feed is not None:
        from rotorec.service.sample import serve_sample

        return serve_sample(settings, args.sample_feed)
    app = create_app(settings)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level="warning", timeout_graceful_shutdown=int(settings.shutdown_timeout_s) + 5
    )
    DrainingServer(config, app.state.service).run()
    return 0
