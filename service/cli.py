"""`rotorec serve`: the scoring API over a run folder, with uvicorn."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("serve", help="serve a trained run over HTTP (FastAPI)",
                            description="Score feeds with a run folder: /v1/rank, Open Inference Protocol v2, /metrics, /docs. "
                                        "Bearer tokens come from ROTOREC_SCORING_TOKENS / ROTOREC_ADMIN_TOKENS "
                                        "(or *_FILE).")
    p.add_argument("--run", required=True, type=Path, help="run folder written by `rotorec train`")
    p.add_argument("--runs-root", type=Path,
                   help="POST /admin/reload loads only run folders inside this one (default: the parent of --run)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--max-batch-size", type=int, default=32, help="requests per forward pass (1 = no batching)")
    p.add_argument("--max-wait-ms", type=float, default=2.0, help="how long a batch waits for more requests")
    p.add_argument("--threads", type=int, help="torch threads for the inference thread")
    p.add_argument("--fail-fast", action="store_true", help="exit if the model cannot be loaded")
    p.add_argument("--sample-feed", type=Path, metavar="PREPARED",
                   help="start, score the first test feed of a prepared folder, print the ranking, and exit")
    p.add_argument("--drain", type=float, default=5.0,
                   help="seconds between SIGTERM and shutdown: readiness is 503, requests are still served")
    p.add_argument("--shutdown-timeout", type=float, default=30.0, help="seconds to finish queued work on shutdown")
    p.set_defaults(handler=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.app import create_app
    from service.server import DrainingServer
    from service.settings import ServiceSettings

    # uvicorn re-raises the signal it stopped on; once drained, a clean exit (status 0) is what
    # orchestrators expect, so the re-raised signal is ignored.
    signal.signal(signal.SIGTERM, lambda *_: None)
    settings = ServiceSettings.from_env(run=args.run, runs_root=args.runs_root, device=args.device,
                                        max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
                                        threads=args.threads, fail_fast=args.fail_fast, drain_s=args.drain,
                                        shutdown_timeout_s=args.shutdown_timeout)
    if args.sample_feed is not None:
        from service.sample import serve_sample

        return serve_sample(settings, args.sample_feed)
    app = create_app(settings)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                            timeout_graceful_shutdown=int(args.shutdown_timeout) + 5)
    DrainingServer(config, app.state.service).run()
    return 0

