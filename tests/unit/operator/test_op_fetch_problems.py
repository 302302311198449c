"""A pod whose model fetch fails shows the fetcher's reason on the fleet (Ready=False), read from
the init container's termination message through the operator's trimmed pod cache: found on the
real node, where the fleet only said CrashLoopBackOff and the reason was in `kubectl logs`."""

from __future__ import annotations

from typing import Any

from ttsfleet.operator import cache, naming, problems

REASON = "fetch failed: ttsfleet-weights.json: sha256 aaa from http://10.96.0.9, expected bbb"


def _pod(init_status: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "tts-0", "namespace": "team"},
        "status": {
            "phase": "Pending",
            "initContainerStatuses": [{"name": naming.FETCH_CONTAINER, **init_status}],
            "containerStatuses": [
                {"name": naming.WORKER_CONTAINER, "state": {"waiting": {"reason": "PodInitializing"}}}
            ],
        },
    }


def _terminated(message: str = REASON, code: int = 1) -> dict[str, Any]:
    return {"terminated": {"exitCode": code, "reason": "Error", "message": message}}


def test_crash_looping_fetcher_reports_its_termination_message_through_the_cache() -> None:
    pod = _pod(
        {
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s restarting failed container"}},
            "lastState": _terminated(),
        }
    )

    found = problems.pod_problems([cache.trim_pod(pod)])

    assert [(p.reason, p.message) for p in found] == [(problems.FETCH_FAILED, f"pod tts-0: {REASON}")]


def test_fetcher_that_just_failed_reports_before_the_back_off() -> None:
    found = problems.pod_problems([cache.trim_pod(_pod({"state": _terminated()}))])

    assert [p.reason for p in found] == [problems.FETCH_FAILED]
    assert REASON in found[0].message


def test_without_a_message_the_exit_code_is_named() -> None:
    found = problems.pod_problems([_pod({"state": _terminated(message="", code=2)})])

    assert found[0].message == "pod tts-0: Error (exit code 2)"


def test_a_fetcher_that_succeeded_or_runs_is_no_problem() -> None:
    done = _pod({"state": _terminated(message="", code=0)})
    running = _pod({"state": {"running": {}}, "lastState": _terminated()})  # retrying now
    running["status"]["initContainerStatuses"][0]["lastState"] = {}

    assert problems.pod_problems([done, running]) == []


def test_a_crash_looping_worker_names_its_last_exit() -> None:
    pod = _pod({"state": _terminated(message="", code=0)})
    pod["status"]["containerStatuses"] = [
        {
            "name": naming.WORKER_CONTAINER,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
            "lastState": _terminated("worker stopping: model failed to load"),
        }
    ]

    (found,) = problems.pod_problems([cache.trim_pod(pod)])

    assert found.reason == "CrashLoopBackOff"
    assert found.message.endswith("last exit: worker stopping: model failed to load")
