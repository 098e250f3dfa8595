"""Django settings of the local Label Studio server: Label Studio's own, without its telemetry middleware,
with the cyclic garbage collector paused while a request runs, JSON through orjson, and on PostgreSQL a
bulk insert that psycopg can encode quickly.

- ``ContextLogMiddleware`` is Label Studio's usage telemetry. With analytics off it sends nothing, but it
  still parses every request body as JSON before the view does, which is about a quarter of the server's
  time on a bulk task import.
- A bulk request (importing or listing hundreds of tasks of 37 keypoints) builds about a million small
  dicts and lists, and Python's cyclic collector, rescanning every surviving object hundreds of times,
  took 40-50% of a listing's time and a quarter of an import's. ``PauseGcMiddleware`` pauses it while a
  request runs (see ``spinetrack_tools.gcpause``); it collects between requests.
- JSON: decoding the stored JSON (predictions and annotations of 150 regions each) was 45-70% of a task
  listing, and the request bodies of an import and the rendered responses most of the rest. orjson does
  each several times faster with the same result: ``JSONField.from_db_value``, DRF's ``JSONParser.parse``
  (the import views name that class themselves) and the renderer (``lsapp``), each falling back to Label Studio's
  own path for what orjson does not take (a custom decoder, numbers beyond 64 bits, pretty-printing).
- PostgreSQL: Django 5.2 bulk-inserts a column as one array literal (``UNNEST``), which psycopg escapes
  element by element in Python, about 45% of an import on PostgreSQL;
  ``spinetrack_tools.labelstudio.pgbackend`` is Django's PostgreSQL backend with the plain multi-row
  ``INSERT ... VALUES``, where each JSON value is quoted by libpq.

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

ORJSON_APP = "spinetrack_tools.labelstudio.lsapp.FastJsonConfig"
ORJSON_RENDERER = "spinetrack_tools.labelstudio.lsapp.OrjsonRenderer"
PG_BACKEND = "spinetrack_tools.labelstudio.pgbackend"
INSTALLED_APPS = [*INSTALLED_APPS, ORJSON_APP]  # noqa: F405
REST_FRAMEWORK = {**REST_FRAMEWORK, "DEFAULT_RENDERER_CLASSES": (ORJSON_RENDERER,)}  # noqa: F405
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":  # noqa: F405
    DATABASES = {**DATABASES, "default": {**DATABASES["default"], "ENGINE": PG_BACKEND}}  # noqa: F405
