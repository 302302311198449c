"""Guardrails in the chart: a pinnable image, no root or privileged override, no binding to a
namespace's default ServiceAccount, a readiness signal, and an optional allow-list of images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from chartkit import HelmError, find, one, operator_container, render

DIGEST = "sha256:" + "ab" * 32


def test_a_digest_pins_the_operator_image(helm_path: Path) -> None:
    image = operator_container(render(helm_path, {"image": {"tag": "1.2.3", "digest": DIGEST}}))["image"]
    assert image == f"ttsfleet/operator:1.2.3@{DIGEST}"
    assert "@" not in operator_container(render(helm_path))["image"]


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"image": {"digest": "sha256:abc"}}, "digest"),
        ({"image": {"digest": "latest"}}, "digest"),
        ({"image": {"tag": "1.0@sha256:" + "ab" * 32}}, "tag"),
        ({"image": {"tag": "-bad"}}, "tag"),
        ({"securityContext": {"privileged": True}}, "privileged"),
        ({"securityContext": {"allowPrivilegeEscalation": True}}, "allowPrivilegeEscalation"),
        ({"securityContext": {"allowPrivilegeEscalation": None}}, "allowPrivilegeEscalation"),
        ({"securityContext": {"runAsUser": 0}}, "runAsUser"),
        ({"securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}, "add"),
        ({"podSecurityContext": {"runAsUser": 0}}, "runAsUser"),
        ({"podSecurityContext": {"runAsNonRoot": False}}, "runAsNonRoot"),
        ({"podSecurityContext": {"runAsNonRoot": None}}, "runAsNonRoot"),
        ({"podSecurityContext": {"fsGroup": 0}}, "fsGroup"),
        ({"podSecurityContext": {"seccompProfile": {"type": "Unconfined"}}}, "type"),
        ({"serviceAccount": {"create": False, "name": "default"}}, "name"),
        ({"serviceAccount": {"name": "default"}}, "name"),
        ({"imagePolicy": {"allowedPrefixes": ["registry.example.com"]}}, "allowedPrefixes"),
    ],
)
def test_unsafe_values_are_refused_naming_the_value(helm_path: Path, values: dict[str, Any], named: str) -> None:
    with pytest.raises(HelmError, match="schema") as failure:
        render(helm_path, values)
    assert named in str(failure.value)


def test_hardened_overrides_are_still_accepted(helm_path: Path) -> None:
    objects = render(
        helm_path,
        {
            "podSecurityContext": {"runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001},
            "securityContext": {"capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True},
            "serviceAccount": {"create": False, "name": "tts-operator"},
        },
    )
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["serviceAccountName"] == "tts-operator"


def test_the_operator_pod_is_ready_only_when_kopf_serves_its_health_endpoint(helm_path: Path) -> None:
    container = operator_container(render(helm_path))
    health = next(p["containerPort"] for p in container["ports"] if p["name"] == "health")
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert f"--liveness=http://0.0.0.0:{health}/healthz" in container["args"]


def test_image_allow_list_renders_an_admission_policy_for_fleets(helm_path: Path) -> None:
    assert not find(render(helm_path), "ValidatingAdmissionPolicy")
    prefixes = ["registry.example.com/tts/", "ghcr.io/ttsfleet/"]
    objects = render(helm_path, {"imagePolicy": {"allowedPrefixes": prefixes}, "watchNamespaces": ["team-a"]})
    policy = one(objects, "ValidatingAdmissionPolicy")
    binding = one(objects, "ValidatingAdmissionPolicyBinding")
    assert policy["apiVersion"] == "admissionregistration.k8s.io/v1"
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["ttsdeployments"] and set(rule["operations"]) == {"CREATE", "UPDATE"}
    assert policy["spec"]["variables"][0]["expression"] == '["registry.example.com/tts/","ghcr.io/ttsfleet/"]'
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    expression = binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"][0]
    assert expression["values"] == ["team-a"]


def test_only_prometheus_may_connect_to_the_operator_and_only_for_metrics(helm_path: Path) -> None:
    objects = render(helm_path, {"networkPolicy": {"prometheusNamespace": "observability"}})
    policy = one(objects, "NetworkPolicy")
    deployment = one(objects, "Deployment")
    assert policy["spec"]["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    (rule,) = policy["spec"]["ingress"]
    metrics = next(p["containerPort"] for p in operator_container(objects)["ports"] if p["name"] == "metrics")
    assert rule["ports"] == [{"protocol": "TCP", "port": metrics}]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}}]
    assert not find(render(helm_path, {"networkPolicy": {"enabled": False}}), "NetworkPolicy")
