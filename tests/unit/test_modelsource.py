"""The model-source rules: the fetcher's checks, the CRD's CEL rules built from them, and the
examples a user applies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from source_cases import SOURCE_CASES

from ttsfleet import modelsource
from ttsfleet.operator.crd import build_crd
from ttsfleet.worker.fetch import FetchError, make_source

pytestmark = pytest.mark.unit
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize(("case", "model", "field"), SOURCE_CASES, ids=[c[0] for c in SOURCE_CASES])
def test_rules_name_the_field_the_fetcher_refuses(case: str, model: dict[str, Any], field: str | None) -> None:
    revision = model.get("revision", "main")  # the CRD's default
    insecure = bool(model.get("allowInsecureHTTP", False))
    broken = modelsource.problem(model["source"], revision, insecure)
    assert (broken[0] if broken else None) == field
    if field is None:
        return
    with pytest.raises(FetchError, match=f"model {field}") as refused:
        make_source(model["source"], revision, allow_insecure_http=insecure)
    # A refused URL's credentials are not echoed into the fetcher's error (and so its log).
    assert "s3cret" not in str(refused.value) and "hf_abc" not in str(refused.value)


def test_crd_carries_every_source_rule_on_the_model() -> None:
    crd = build_crd()
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    model = spec["properties"]["model"]
    rules = model["x-kubernetes-validations"]
    assert [(r["rule"], r["fieldPath"]) for r in rules] == [(rule.cel, f".{rule.field}") for rule in modelsource.RULES]
    assert model["properties"]["allowInsecureHTTP"]["default"] is False
    assert model["properties"]["secretKey"]["default"] == "token"


def _example_models() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "TTSDeployment":
                found.append((str(path.relative_to(EXAMPLES)), doc["spec"]["model"]))
    return found


@pytest.mark.parametrize(("path", "model"), _example_models(), ids=[m[0] for m in _example_models()])
def test_examples_name_sources_the_fetcher_accepts(path: str, model: dict[str, Any]) -> None:
    broken = modelsource.problem(
        model["source"], model.get("revision", "main"), bool(model.get("allowInsecureHTTP", False))
    )
    assert broken is None, f"{path}: spec.model.{broken[0]}: {broken[1]}" if broken else ""
