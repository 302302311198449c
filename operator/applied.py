"""Whether a child already is what we would apply, so that an unchanged fleet costs no write.

Two checks, both against the child as the watch last showed it:

- the hash of the desired object, kept on the child as an annotation when it was applied: a new
  spec (or a new operator) changes it, including when a field is dropped from the desired object,
  which a comparison of values alone would not notice;
- every value we set is still there (the live object may hold more: defaults, other managers'
  fields): a hand edit or a controller fighting us shows as a difference and is applied over.

Quantities are compared by value, since the API server normalises them ("0.5" reads "500m").
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Any

from kubernetes.utils import parse_quantity

from ttsfleet.operator import spec

ANNOTATION = f"{spec.GROUP}/applied-sha256"


def digest(obj: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def stamp(obj: dict[str, Any]) -> dict[str, Any]:
    """The desired object with its own hash as an annotation (the hash excludes the annotation).

    A new object whose nested values are ``obj``'s own, not copies: a pass renders every child
    it checks, and the deep copy took 0.3 of the 0.7 ms rendering a fleet took. Neither object
    is changed afterwards."""
    meta = obj.get("metadata") or {}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != ANNOTATION}
    # Hashed as it is without the stamp: no annotations at all when the stamp is the only one.
    unstamped_meta = {k: v for k, v in meta.items() if k != "annotations"}
    if annotations:
        unstamped_meta["annotations"] = annotations
    hashed = digest({**obj, "metadata": unstamped_meta})
    return {**obj, "metadata": {**unstamped_meta, "annotations": {**annotations, ANNOTATION: hashed}}}


def stamp_of(obj: dict[str, Any] | None) -> str | None:
    if obj is None:
        return None
    value = ((obj.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION)
    return str(value) if value is not None else None


def _quantity(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        return Decimal(parse_quantity(value))
    except (ValueError, ArithmeticError):
        return None


def _empty(value: Any) -> bool:
    return value is None or value == {} or value == []


def difference(desired: Any, live: Any, path: str = "") -> str | None:
    """The first path where ``live`` lacks what ``desired`` sets, or None when it covers it."""
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return path or "."
        for key, value in desired.items():
            if key not in live:
                if _empty(value):
                    continue  # the API server drops empty maps and lists
                return f"{path}.{key}"
            found = difference(value, live[key], f"{path}.{key}")
            if found is not None:
                return found
        return None
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return path
        for index, (want, have) in enumerate(zip(desired, live, strict=True)):
            found = difference(want, have, f"{path}[{index}]")
            if found is not None:
                return found
        return None
    if desired is None or desired == live:
        return None
    left, right = _quantity(desired), _quantity(live)
    return None if left is not None and left == right else path


def drift(stamped: dict[str, Any], live: dict[str, Any] | None) -> str | None:
    """Why ``stamped`` (see :func:`stamp`) must be applied over ``live``; None when it need not be."""
    if live is None:
        return "missing"
    if live.get("metadata", {}).get("deletionTimestamp"):
        return None  # an apply would not stop it; its DELETED event brings the next pass
    if stamp_of(live) != stamp_of(stamped):
        return "desired state changed"
    meta = stamped.get("metadata") or {}
    live_meta = live.get("metadata") or {}
    for key in ("labels", "annotations", "ownerReferences"):
        found = difference(meta.get(key), live_meta.get(key), f".metadata.{key}")
        if found is not None:
            return f"{found} differs"
    for key, value in stamped.items():
        if key in ("apiVersion", "kind", "metadata", "status"):
            continue
        found = difference(value, live.get(key), f".{key}")
        if found is not None:
            return f"{found} differs"
    return None
