"""Runtime problems the schema cannot catch, found in what the API server reports.

A problem makes the fleet Ready=False/Degraded=True with the problem's reason; it never stops
the operator from reconciling this or any other fleet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ttsfleet.operator import naming

# Container waiting reasons that will not clear on their own.
STUCK_WAITING_REASONS = frozenset(
    {
        "CreateContainerConfigError",
        "CreateContainerError",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CrashLoopBackOff",
    }
)


@dataclass(frozen=True)
class Problem:
    reason: str
    message: str


# What the kubelet writes into a container's waiting message when a Secret the container's
# environment refers to is absent (CreateContainerConfigError): the API server's NotFound text.
_SECRET_NOT_FOUND = re.compile(r'secrets? "(?P<name>[^"]+)" not found')


def missing_secret(name: str, namespace: str, seen: str = "") -> Problem:
    where = f" ({seen})" if seen else ""
    ref = f"{namespace}/{name}" if namespace else name
    return Problem(
        "SecretNotFound",
        f"Secret {ref} named in spec.model.secretRef does not exist: the model cannot be fetched{where}",
    )


def invalid_spec(message: str) -> Problem:
    return Problem("InvalidSpec", message)


def apply_failed(kind: str, name: str, message: str) -> Problem:
    return Problem("ApplyFailed", f"{kind} {name}: {message}")


FETCH_FAILED = "ModelFetchFailed"


def last_failure(container: dict[str, Any]) -> str:
    """Why the container last exited non-zero (its termination message, else reason and code); ""
    when it has not failed. A crash-looping container shows it in lastState between restarts."""
    terminated = (container.get("state") or {}).get("terminated") or (container.get("lastState") or {}).get(
        "terminated"
    )
    if not terminated or terminated.get("exitCode", 0) == 0:
        return ""
    message = (terminated.get("message") or "").strip()
    return message or f"{terminated.get('reason') or 'Error'} (exit code {terminated.get('exitCode')})"


def _pod_condition(pod: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in pod.get("status", {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def pod_problems(pods: list[dict[str, Any]]) -> list[Problem]:
    """At most one problem per reason, naming the first pod that shows it."""
    found: dict[str, Problem] = {}
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        name = pod["metadata"]["name"]
        if pod.get("metadata", {}).get("deletionTimestamp"):
            continue
        scheduled = _pod_condition(pod, "PodScheduled")
        if scheduled and scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
            message = f"pod {name}: {scheduled.get('message', '')}".strip()
            found.setdefault("Unschedulable", Problem("Unschedulable", message))
        status = pod.get("status", {})
        containers = (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
        for container in containers:
            failure = last_failure(container)
            if failure and container.get("name") == naming.FETCH_CONTAINER:
                # The fetcher's own reason (wrong sha256, unreachable source), from its
                # termination message: on the fleet, not only in `kubectl describe pod`.
                found.setdefault(FETCH_FAILED, Problem(FETCH_FAILED, f"pod {name}: {failure}"))
                continue
            waiting = (container.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason in STUCK_WAITING_REASONS:
                message = f"pod {name} container {container.get('name')}: {waiting.get('message', reason)}"
                secret = _SECRET_NOT_FOUND.search(waiting.get("message") or "")
                if reason == "CreateContainerConfigError" and secret:
                    # The operator cannot read Secrets (least privilege): the kubelet's report is
                    # how a missing one is seen, and it names the problem better than the reason.
                    namespace = pod.get("metadata", {}).get("namespace", "")
                    found.setdefault("SecretNotFound", missing_secret(secret["name"], namespace, message))
                    continue
                if failure:
                    message = f"{message}; last exit: {failure}"
                found.setdefault(reason, Problem(reason, message))
    return list(found.values())
