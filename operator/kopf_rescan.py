"""Having kopf re-read discovery for one API group, as it does by itself on a CRD's event.

discovery.py calls this when discovery has caught up with a CRD's last event, which kopf's own
rescan (run on that event) may have been too early for. kopf has no public call for it: this is
the function its CRD watch runs, given the Insights object that __main__ hands to
``kopf.operator()``. kopf is pinned in pyproject.toml; tests/unit/operator/test_op_kopf_rescan.py checks the
call against it.
"""

from __future__ import annotations

from typing import cast

import kopf
from kopf._cogs.structs import bodies, references
from kopf._core.reactor import observation


def new_insights() -> references.Insights:
    return references.Insights()


async def rescan_group(
    group: str, *, settings: kopf.OperatorSettings, registry: kopf.OperatorRegistry, insights: references.Insights
) -> None:
    event = cast(bodies.RawEvent, {"type": "MODIFIED", "object": {"spec": {"group": group}}})
    await observation.process_discovered_resource_event(
        raw_event=event, settings=settings, registry=registry, insights=insights
    )
