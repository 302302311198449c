"""Cron starts for autoscaling schedules given as ``readyBy``: the time the capacity must be
Ready, minus the fleet's measured cold start (p95) and a margin."""

from __future__ import annotations

import math

from ttsfleet.operator.spec import AutoscalingSpec, WarmupSpec

DAY_MINUTES = 24 * 60
_DOW_NAMES = {"SUN": 0, "MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6}


def lead_seconds(autoscaling: AutoscalingSpec, warmup: WarmupSpec, cold_start_p95: float | None) -> int:
    """Without a measurement yet, assume the worst a pod is allowed: the warmup timeout."""
    measured = cold_start_p95 if cold_start_p95 is not None else float(warmup.timeout_seconds)
    return math.ceil(measured) + autoscaling.lead_time_margin_seconds


def _shift_dow_token(token: str) -> str:
    value = _DOW_NAMES.get(token.upper())
    number = value if value is not None else int(token)
    return str((number - 1) % 7)


def _shift_day_of_week(field: str) -> str:
    """The day before each listed day (a start that moved across midnight)."""
    if field == "*":
        return field
    parts = []
    for item in field.split(","):
        if "-" in item:
            low, high = item.split("-", 1)
            shifted_low, shifted_high = _shift_dow_token(low), _shift_dow_token(high)
            if int(shifted_low) <= int(shifted_high):
                parts.append(f"{shifted_low}-{shifted_high}")
            else:  # SUN-… moved to SAT: split the wrapped range
                parts.extend([f"{shifted_low}-6", f"0-{shifted_high}"])
        else:
            parts.append(_shift_dow_token(item))
    return ",".join(parts)


def derive_start(ready_by: str, lead: int) -> str:
    """``readyBy`` has fixed minute and hour fields (the schema enforces it)."""
    minute, hour, dom, month, dow = ready_by.split()
    at = int(hour) * 60 + int(minute) - math.ceil(lead / 60)
    if at < 0:
        at += DAY_MINUTES * math.ceil(-at / DAY_MINUTES)
        dow = _shift_day_of_week(dow)
    return f"{at % 60} {(at // 60) % 24} {dom} {month} {dow}"


def derived_starts(
    autoscaling: AutoscalingSpec, warmup: WarmupSpec, cold_start_p95: float | None
) -> dict[str, tuple[str, int | None]]:
    """Schedule name → (cron start in effect, lead seconds when derived)."""
    lead = lead_seconds(autoscaling, warmup, cold_start_p95)
    starts: dict[str, tuple[str, int | None]] = {}
    for schedule in autoscaling.schedules:
        if schedule.start:
            starts[schedule.name] = (schedule.start, None)
        elif schedule.ready_by:
            starts[schedule.name] = (derive_start(schedule.ready_by, lead), lead)
    return starts
