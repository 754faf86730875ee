"""Validation of VideoCall request bodies: pydantic models, Janus's error codes and texts.

Janus validates a body against a table of parameters (``JANUS_VALIDATE_JSON_OBJECT`` in
``utils.h``) and reports the FIRST failing parameter in table order as 475 "Missing
mandatory element (x)" or 474 "Invalid element type (x should be a string)". The models
below declare their fields in Janus's table order, and pydantic reports errors in field
order, so the first error is the one Janus would report.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from signaling.janus_errors import PluginCode, PluginError, quote

#: Largest ``fallback`` (µs) we accept: Janus keeps it in 32 bits.
MAX_FALLBACK = 2**32 - 1
#: Longest username we accept (Janus has no limit; we bound what we store and echo).
MAX_USERNAME = 128


class _Body(BaseModel):
    # Unknown fields are ignored, as Janus ignores them; types are strict (no "1" -> 1).
    model_config = ConfigDict(extra="ignore", strict=True)
    #: Field -> the words Janus uses for its expected type, for 474 texts.
    janus_types: ClassVar[dict[str, str]] = {}


class RequestBody(_Body):
    request: str
    janus_types = {"request": "a string"}


class UsernameBody(_Body):
    username: str
    janus_types = {"username": "a string"}


class SetBody(_Body):
    audio: bool | None = None
    video: bool | None = None
    bitrate: Annotated[int, Field(ge=0, le=2**32 - 1)] | None = None
    record: bool | None = None
    filename: str | None = None
    restart: bool | None = None
    #: Checked by hand after the table, as Janus does (``validate_set``): any JSON here.
    substream: Any = None
    temporal: Any = None
    fallback: Any = None
    #: Ours, beyond Janus: true gives the substream choice back to the relay (a ``substream`` pins it).
    auto: Any = None
    janus_types = {
        "audio": "a boolean",
        "video": "a boolean",
        "bitrate": "a positive integer",
        "record": "a boolean",
        "filename": "a string",
        "restart": "a boolean",
    }


def validate(model: type[_Body], body: dict[str, Any]) -> Any:
    """Validate ``body`` against ``model`` or raise the PluginError Janus would send."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        if first["type"] == "missing":
            raise PluginError(PluginCode.MISSING_ELEMENT, f"Missing mandatory element ({field})") from None
        kind = model.janus_types.get(field, "valid")
        raise PluginError(PluginCode.INVALID_ELEMENT, f"Invalid element type ({field} should be {kind})") from None


def validate_username(body: dict[str, Any]) -> str:
    """The ``username`` of register/call: a non-empty string of bounded length.

    Janus accepts "" and any length; we refuse both (an empty name cannot be called and
    a megabyte name would be echoed into every ``list``), with Janus's codes.
    """
    name: str = validate(UsernameBody, body).username
    if not name:
        raise PluginError(PluginCode.INVALID_ELEMENT, "Invalid element type (username should be a non-empty string)")
    if len(name) > MAX_USERNAME:
        raise PluginError(
            PluginCode.INVALID_ELEMENT, f"Invalid value (username should be at most {MAX_USERNAME} characters)"
        )
    return name


def validate_set(body: dict[str, Any]) -> SetBody:
    """``set``: Janus's table first, then the simulcast fields it checks by hand."""
    parsed: SetBody = validate(SetBody, body)
    for field in ("substream", "temporal"):
        value = body.get(field)
        if value is not None and (type(value) is not int or not 0 <= value <= 2):
            raise PluginError(PluginCode.INVALID_ELEMENT, f"Invalid value ({field} should be 0, 1 or 2)")
    fallback = body.get("fallback")
    if fallback is not None and (type(fallback) is not int or fallback < 0):
        raise PluginError(PluginCode.INVALID_ELEMENT, "Invalid value (fallback should be a positive integer)")
    if fallback is not None and fallback > MAX_FALLBACK:
        # Differs from Janus, which keeps it in 32 bits without a check.
        raise PluginError(PluginCode.INVALID_ELEMENT, f"Invalid value (fallback should be at most {MAX_FALLBACK})")
    auto = body.get("auto")
    if auto is not None and type(auto) is not bool:
        raise PluginError(PluginCode.INVALID_ELEMENT, "Invalid element type (auto should be a boolean)")
    return parsed


def request_name(body: Any) -> str:
    """The request verb, lower-cased (Janus matches it case-insensitively)."""
    if body is None:
        raise PluginError(PluginCode.NO_MESSAGE, "No message??")
    if not isinstance(body, dict):
        raise PluginError(PluginCode.INVALID_JSON, "JSON error: not an object")
    request: str = validate(RequestBody, body).request
    return request.lower()


def unknown_request(request: str) -> PluginError:
    return PluginError(PluginCode.INVALID_REQUEST, f"Unknown request ({quote(request)})")
