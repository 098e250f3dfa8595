"""Django settings of the local Label Studio server: Label Studio's own, without its telemetry middleware.

``ContextLogMiddleware`` is Label Studio's usage telemetry. With analytics off it sends nothing, but it
still parses every request body as JSON before the view does, which is about a quarter of the server's
time on a bulk task import. ``server.start`` points ``DJANGO_SETTINGS_MODULE`` here; everything else is
Label Studio's configuration unchanged (``LABEL_STUDIO_*`` / ``DJANGO_DB`` environment variables apply).
"""

# Label Studio's settings module reads django.conf.settings while it is being imported (Sentry setup), so
# the base names must already be on this module when that happens, as they are on Label Studio's own.
from core.settings.base import *  # noqa: F401,F403,E402
from label_studio.core.settings.label_studio import *  # noqa: F401,F403,E402

TELEMETRY_MIDDLEWARE = "core.middleware.ContextLogMiddleware"
MIDDLEWARE = [m for m in MIDDLEWARE if m != TELEMETRY_MIDDLEWARE]  # noqa: F405
