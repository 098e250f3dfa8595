"""Django settings of the local Label Studio server: Label Studio's own, without its telemetry middleware and
with the cyclic garbage collector paused while a request runs.

- ``ContextLogMiddleware`` is Label Studio's usage telemetry. With analytics off it sends nothing, but it
  still parses every request body as JSON before the view does, which is about a quarter of the server's
  time on a bulk task import.
- A bulk request (importing or listing hundreds of tasks of 37 keypoints) builds about a million small
  dicts and lists, and Python's cyclic collector, rescanning every surviving object hundreds of times,
  took 40-50% of a listing's time and a quarter of an import's. ``PauseGcMiddleware`` pauses it while a
  request runs (see ``spinetrack_tools.gcpause``); it collects between requests.

``server.start`` points ``DJANGO_SETTINGS_MODULE`` here; everything else is Label Studio's configuration
unchanged (``LABEL_STUDIO_*`` / ``DJANGO_DB`` environment variables apply).
"""

from typing import Any, Callable

# Label Studio's settings module reads django.conf.settings while it is being imported (Sentry setup), so
# the base names must already be on this module when that happens, as they are on Label Studio's own.
from core.settings.base import *  # noqa: F401,F403,E402
from label_studio.core.settings.label_studio import *  # noqa: F401,F403,E402

from ..gcpause import gc_paused  # noqa: E402


class PauseGcMiddleware:
    """No cyclic garbage collection while any request is being served (``gcpause.gc_paused``)."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        with gc_paused():
            return self.get_response(request)


TELEMETRY_MIDDLEWARE = "core.middleware.ContextLogMiddleware"
PAUSE_GC_MIDDLEWARE = f"{__name__}.PauseGcMiddleware"
MIDDLEWARE = [PAUSE_GC_MIDDLEWARE] + [m for m in MIDDLEWARE if m != TELEMETRY_MIDDLEWARE]  # noqa: F405
