"""The web console: static assets and the router that serves them at `/` and `/console/...`.

See `llmaas.console.router`. The console itself is plain ES modules under `static/` that use only the public API.
"""

from llmaas.console.router import PUBLIC_PATHS, router

__all__ = ["PUBLIC_PATHS", "router"]
