"""One table of model sources, run through the fetcher's checks (unit) and the API server's CEL
(e2e), so the two layers cannot drift apart: what one refuses, the other refuses, for the same field."""

from __future__ import annotations

from typing import Any

from fleet_helpers import PINNED_REVISION as COMMIT

# (id, spec.model, field the refusal names or None when accepted)
SOURCE_CASES: list[tuple[str, dict[str, Any], str | None]] = [
    ("hf-pinned", {"source": "hf://2Noise/ChatTTS", "revision": COMMIT}, None),
    ("hf-main", {"source": "hf://2Noise/ChatTTS", "revision": "main"}, "revision"),
    ("hf-default-revision", {"source": "hf://2Noise/ChatTTS"}, "revision"),
    ("hf-short-hash", {"source": "hf://2Noise/ChatTTS", "revision": COMMIT[:7]}, "revision"),
    ("hf-uppercase-hash", {"source": "hf://2Noise/ChatTTS", "revision": COMMIT.upper()}, "revision"),
    ("hf-revision-in-source", {"source": f"hf://2Noise/ChatTTS@{COMMIT}", "revision": COMMIT}, "source"),
    ("https", {"source": "https://models.example.com/chattts/v1", "revision": "v1"}, None),
    ("https-port", {"source": "https://10.0.0.7:8443/chattts", "revision": "v1"}, None),
    ("http-not-allowed", {"source": "http://models.tts.svc/chattts", "revision": "v1"}, "source"),
    (
        "http-allowed",
        {"source": "http://models.tts.svc/chattts", "revision": "v1", "allowInsecureHTTP": True},
        None,
    ),
    ("https-userinfo", {"source": "https://user:s3cret@models.example.com/chattts", "revision": "v1"}, "source"),
    ("https-token-user", {"source": "https://hf_abc@models.example.com/chattts", "revision": "v1"}, "source"),
    ("https-query-token", {"source": "https://models.example.com/chattts?token=abc", "revision": "v1"}, "source"),
    ("https-no-host", {"source": "https:///chattts", "revision": "v1"}, "source"),
    ("unknown-scheme", {"source": "s3://bucket/chattts", "revision": "v1"}, "source"),
    ("relative-path", {"source": "models/chattts", "revision": "v1"}, "source"),
    ("absolute-path", {"source": "/models/chattts", "revision": "v1"}, None),
    ("file-url", {"source": "file:///models/chattts", "revision": "v1"}, None),
]
