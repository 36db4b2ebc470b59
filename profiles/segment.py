"""Segment's tracking payloads onto the native event shape (pure: no Django, no database).

Segment's libraries (analytics.js, analytics-python, RudderStack's SDKs) send camelCase
messages with keys of their own (`integrations`, `_metadata`, `writeKey`, `channel`, …).
What the native event (profiles.validation.EventIn) has a place for is translated; the rest
is Segment's delivery bookkeeping and is dropped, since EventIn forbids unknown fields.
Errors come back in Segment's names (`userId`, not `user_id`) so a client sees its own field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

SEGMENT_TYPES = ("track", "identify", "page", "screen", "alias", "group")

# Segment name -> native name; the native snake_case spelling is accepted too.
_RENAMED = {
    "userId": "user_id",
    "anonymousId": "anonymous_id",
    "messageId": "message_id",
    "previousId": "previous_id",
    "userHash": "user_hash",
}
_COPIED = ("event", "name", "properties", "traits")
_NATIVE_TO_SEGMENT = {
    **{native: segment for segment, native in _RENAMED.items()},
    "sent_at": "sentAt",
}
_NATIVE_NAMES = re.compile(r"\b(" + "|".join(_NATIVE_TO_SEGMENT) + r")\b")


@dataclass(frozen=True, slots=True)
class Translated:
    """A batch translated: the native events, the batch index each came from, and the
    messages refused before validation (not an object, too large)."""

    events: list[dict[str, Any]]
    positions: list[int]
    rejected: list[dict[str, Any]]


def segment_message_translate(
    message: Mapping[str, Any],
    *,
    type_: str | None = None,
    sent_at: Any = None,
    context: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One Segment message as a native event dict (still to be validated by EventIn).

    `type_` is the type the endpoint implies (/v1/track), which wins over the body's;
    `sent_at` and `context` are the batch's, used where the message has none of its own.
    """
    out: dict[str, Any] = {}
    kind = type_ if type_ is not None else message.get("type")
    if kind is not None:
        out["type"] = kind
    for segment_name, native in _RENAMED.items():
        value = message.get(segment_name)
        if value is None:
            value = message.get(native)
        if value is not None:
            out[native] = value
    for name in _COPIED:
        if message.get(name) is not None:
            out[name] = message[name]

    # Segment's own clock: `timestamp` when the event happened (older libraries call it
    # originalTimestamp), `sentAt` when the library sent it. The ingestion service shifts
    # timestamp by received_at - sent_at.
    timestamp = message.get("timestamp")
    if timestamp is None:
        timestamp = message.get("originalTimestamp")
    if timestamp is not None:
        out["timestamp"] = timestamp
    own_sent_at = message.get("sentAt", message.get("sent_at"))
    if own_sent_at is None:
        own_sent_at = sent_at
    if own_sent_at is not None:
        out["sent_at"] = own_sent_at

    if kind in ("page", "screen", "group"):
        extra: dict[str, Any] = {}
        if message.get("category") is not None:
            extra["category"] = message["category"]
        if kind == "group" and message.get("groupId") is not None:
            extra["group_id"] = message["groupId"]
        if extra:
            props = out.get("properties")
            if props is None or isinstance(props, dict):
                out["properties"] = {**extra, **(props or {})}

    ctx = message.get("context")
    if ctx is None or isinstance(ctx, dict):
        merged = {**(context or {}), **(ctx or {})}
        if "userAgent" in merged:
            # The native name, which bot filtering reads.
            user_agent = merged.pop("userAgent")
            merged.setdefault("user_agent", user_agent)
        if merged:
            out["context"] = merged
        nested = merged.get("traits")
        if kind == "identify" and isinstance(nested, dict) and nested:
            # RudderStack's SDKs send identify's traits as context.traits only.
            traits = out.get("traits")
            if traits is None or isinstance(traits, dict):
                out["traits"] = {**nested, **(traits or {})}
    else:
        out["context"] = ctx  # not an object: EventIn names the field
    return out


def segment_batch_translate(
    messages: Sequence[Any],
    *,
    type_: str | None = None,
    sent_at: Any = None,
    context: Any = None,
    max_message_bytes: int | None = None,
) -> Translated:
    """Translate a batch; `max_message_bytes` (Segment's 32 KB) is checked on each message
    as sent, when given."""
    batch_context = context if isinstance(context, dict) else None
    events: list[dict[str, Any]] = []
    positions: list[int] = []
    rejected: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            rejected.append(
                {"index": index, "errors": {"non_field_errors": ["a message must be an object"]}}
            )
            continue
        if max_message_bytes is not None and len(orjson.dumps(message)) > max_message_bytes:
            rejected.append(
                {
                    "index": index,
                    "errors": {
                        "non_field_errors": [f"a message may be at most {max_message_bytes} bytes"]
                    },
                }
            )
            continue
        events.append(
            segment_message_translate(message, type_=type_, sent_at=sent_at, context=batch_context)
        )
        positions.append(index)
    return Translated(events=events, positions=positions, rejected=rejected)


def segment_errors(errors: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """Native validation errors in Segment's field names (user_id -> userId)."""
    out: dict[str, list[str]] = {}
    for path, messages in errors.items():
        head, dot, rest = path.partition(".")
        name = _NATIVE_TO_SEGMENT.get(head, head) + dot + rest
        out.setdefault(name, []).extend(
            _NATIVE_NAMES.sub(lambda m: _NATIVE_TO_SEGMENT[m.group(1)], msg) for msg in messages
        )
    return out


def segment_rejected(
    translated: Translated, ingest_rejected: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Every refused message by its index in the batch as sent, in Segment's names."""
    out = list(translated.rejected)
    for entry in ingest_rejected:
        out.append(
            {
                "index": translated.positions[entry["index"]],
                "errors": segment_errors(entry["errors"]),
            }
        )
    return sorted(out, key=lambda r: r["index"])
