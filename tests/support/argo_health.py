"""Run Argo CD's TTSDeployment health check (Lua) the way Argo CD does: Lua 5.1 (Argo CD embeds
gopher-lua, a 5.1 implementation), the live object as the global ``obj``, the script's returned
table read for ``status`` and ``message``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lupa import lua51

REPO = Path(__file__).resolve().parents[2]
HEALTH_LUA = REPO / "examples" / "argocd" / "health" / "ttsdeployment.lua"
ARGOCD_CM = REPO / "examples" / "argocd" / "argocd-cm.yaml"
HEALTH_KEY = "resource.customizations.health.tts.ttsfleet.io_TTSDeployment"
# What Argo CD accepts from a health script; anything else is an error in the Argo CD UI.
ARGO_STATUSES = frozenset({"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"})


def health(obj: dict[str, Any], script: str | None = None) -> tuple[str, str]:
    runtime = lua51.LuaRuntime()
    runtime.globals().obj = runtime.table_from(obj, recursive=True)
    result = runtime.execute(script if script is not None else HEALTH_LUA.read_text())
    status, message = result["status"], result["message"]
    if status not in ARGO_STATUSES:
        raise AssertionError(f"health script returned {status!r}, which Argo CD does not know")
    return str(status), str(message or "")
