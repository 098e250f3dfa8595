"""orjson for the local Label Studio server's JSON (see ``ls_settings``): the stored JSON fields, request
bodies and responses. Installed as a Django app so that the patches are made once Django is set up."""

from __future__ import annotations

import io
from typing import Any

import orjson
from django.apps import AppConfig
from rest_framework.renderers import JSONRenderer


_ORIGINAL: dict[str, Any] = {}  # Django's JSONField.from_db_value and DRF's JSONParser.parse, once replaced


class FastJsonConfig(AppConfig):
    name = "spinetrack_tools.labelstudio"
    label = "spinetrack_fastjson"
    verbose_name = "orjson for Label Studio's JSON"

    def ready(self) -> None:
        from django.db.models.fields.json import JSONField
        from rest_framework.parsers import JSONParser

        if not _ORIGINAL:
            _ORIGINAL.update(from_db_value=JSONField.from_db_value, parse=JSONParser.parse)
            JSONField.from_db_value, JSONParser.parse = from_db_value, parse


def from_db_value(self: Any, value: Any, expression: Any, connection: Any) -> Any:
    """``JSONField.from_db_value`` with orjson where Django would call plain ``json.loads``."""
    from django.db.models.fields.json import KeyTransform

    if isinstance(value, str) and self.decoder is None and not isinstance(expression, KeyTransform):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:  # e.g. integers beyond 64 bits: Django's own path decides
            pass
    return _ORIGINAL["from_db_value"](self, value, expression, connection)


def parse(self: Any, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
    """DRF's ``JSONParser.parse`` with orjson for UTF-8 bodies (strict, DRF's default: no NaN)."""
    from django.conf import settings

    encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
    if not self.strict or encoding.lower().replace("-", "") != "utf8":
        return _ORIGINAL["parse"](self, stream, media_type, parser_context)
    body = stream.read() if stream is not None else b""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:  # invalid, or e.g. integers beyond 64 bits: DRF's own path decides
        return _ORIGINAL["parse"](self, io.BytesIO(body), media_type, parser_context)


class OrjsonRenderer(JSONRenderer):
    """DRF's JSON renderer through orjson for compact UTF-8 output (Label Studio's settings); datetimes
    and whatever else orjson does not know go through DRF's encoder, as before."""

    def render(self, data: Any, accepted_media_type: Any = None, renderer_context: Any = None) -> bytes:
        if data is None:
            return b""
        plain = self.compact and not self.ensure_ascii
        if not plain or self.get_indent(accepted_media_type, renderer_context or {}) is not None:
            return super().render(data, accepted_media_type, renderer_context)
        try:
            out = orjson.dumps(data, default=self.encoder_class().default,
                               option=orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS)
        except TypeError:  # e.g. integers beyond 64 bits
            return super().render(data, accepted_media_type, renderer_context)
        # as DRF does: a strict JavaScript subset
        return out.replace("\u2028".encode(), b"\\u2028").replace("\u2029".encode(), b"\\u2029")
