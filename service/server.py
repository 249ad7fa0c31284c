"""uvicorn's server with a drain phase before shutdown (docs/serving.md, "Graceful shutdown")."""

from __future__ import annotations

import threading

import uvicorn


class DrainingServer(uvicorn.Server):
    """On the first SIGTERM/SIGINT the service turns not-ready, so load balancers stop sending,
    but keeps serving for `drain_s`; then uvicorn shuts down gracefully (queued and running work
    finishes). A second signal, or drain_s = 0, stops at once."""

    def __init__(self, config: uvicorn.Config, service_state) -> None:
        super().__init__(config)
        self.service_state = service_state

    def handle_exit(self, sig, frame) -> None:
        state = self.service_state
        if state.draining or state.settings.drain_s == 0:
            return super().handle_exit(sig, frame)
        state.draining = True
        timer = threading.Timer(state.settings.drain_s, super().handle_exit, (sig, frame))
        timer.daemon = True
        timer.start()
