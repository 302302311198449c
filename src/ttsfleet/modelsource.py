"""Which model sources a fleet may name: one set of rules for the API server and the fetcher.

The CRD turns :data:`RULES` into CEL validations on ``spec.model`` (so ``kubectl apply`` refuses a
source the init container would refuse, naming the field), and ``ttsfleet-fetch`` checks the same
rules through :func:`problem` before it opens a connection (it also runs outside Kubernetes).
Both read the regular expressions below; CEL's ``matches`` and Python's ``re.search`` agree on
them (RE2 and ``re`` share this subset), and a test runs one table of cases through both.

Nothing here imports the Kubernetes client or torch: the operator and the worker both use it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

HF_SCHEME = "hf://"
# hf://<namespace>/<name> (or a legacy top-level <name>); the revision goes in its own field.
HF_SOURCE = r"^hf://[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$"
# A full git commit: a branch, a tag or an abbreviated hash can name other files tomorrow.
HF_COMMIT = r"^[0-9a-f]{40}$"
KNOWN_SCHEME = r"^(hf://|https://|http://|file://|/)"
HTTP_SOURCE = r"^https?://"
# user:password@ before the host: a credential that would show in pod arguments, logs and status.
URL_USERINFO = r"^https?://[^/]*@"
# A query or fragment is where signed tokens hide, and the fetcher appends file paths to the URL.
URL_QUERY = r"^https?://[^?#]*[?#]"
HTTP_URL = r"^https?://[^/?#@\s]+(/[^?#\s]*)?$"
PLAIN_HTTP = r"^http://"


@dataclass(frozen=True)
class SourceRule:
    """One rule over (source, revision, allowInsecureHTTP), as CEL and as Python."""

    field: str  # the spec.model field the message is about
    cel: str  # over ModelSpec: self.source, self.revision, self.allowInsecureHTTP
    message: str
    holds: Callable[[str, str, bool], bool]


def _m(pattern: str, text: str) -> bool:
    return re.search(pattern, text) is not None


RULES: tuple[SourceRule, ...] = (
    SourceRule(
        "source",
        f"self.source.matches(r'{KNOWN_SCHEME}')",
        "must start with https://, hf://, file:// or / (http:// only with allowInsecureHTTP)",
        lambda source, _revision, _insecure: _m(KNOWN_SCHEME, source),
    ),
    SourceRule(
        "source",
        f"!self.source.matches(r'{URL_USERINFO}')",
        "must not carry credentials (user:password@host): put the token in the Secret named by "
        "secretRef, under secretKey; the fetcher sends it as an Authorization header",
        lambda source, _revision, _insecure: not _m(URL_USERINFO, source),
    ),
    SourceRule(
        "source",
        f"!self.source.matches(r'{URL_QUERY}')",
        "must be a base URL without a query or fragment (tokens in a URL leak into pod arguments "
        "and logs): put the token in the Secret named by secretRef",
        lambda source, _revision, _insecure: not _m(URL_QUERY, source),
    ),
    SourceRule(
        "source",
        f"!self.source.matches(r'{HTTP_SOURCE}') || self.source.matches(r'{HTTP_URL}')",
        "must be a URL of the form https://host[:port][/path]",
        lambda source, _revision, _insecure: not _m(HTTP_SOURCE, source) or _m(HTTP_URL, source),
    ),
    SourceRule(
        "source",
        f"!self.source.matches(r'{PLAIN_HTTP}') || (has(self.allowInsecureHTTP) && self.allowInsecureHTTP)",
        "plain http:// is refused (anyone on the path can swap the weights): use https://, or set "
        "allowInsecureHTTP: true for a server inside the cluster",
        lambda source, _revision, insecure: not _m(PLAIN_HTTP, source) or insecure,
    ),
    SourceRule(
        "source",
        f"!self.source.startsWith(r'{HF_SCHEME}') || self.source.matches(r'{HF_SOURCE}')",
        "hf:// sources name a Hub repository as hf://<namespace>/<name>; the commit goes in revision",
        lambda source, _revision, _insecure: not source.startswith(HF_SCHEME) or _m(HF_SOURCE, source),
    ),
    SourceRule(
        "revision",
        f"!self.source.startsWith(r'{HF_SCHEME}') || self.revision.matches(r'{HF_COMMIT}')",
        "hf:// sources need revision pinned to a full 40-hex commit hash: a branch such as main, "
        "a tag or a short hash can name other files tomorrow",
        lambda source, revision, _insecure: not source.startswith(HF_SCHEME) or _m(HF_COMMIT, revision),
    ),
)


def problem(source: str, revision: str, allow_insecure_http: bool = False) -> tuple[str, str] | None:
    """``(field, message)`` of the first rule a source breaks, or None when it is acceptable."""
    for rule in RULES:
        if not rule.holds(source, revision, allow_insecure_http):
            return rule.field, rule.message
    return None


# The init container's environment variable holding the token from spec.model.secretRef /
# secretKey (a secretKeyRef: only that key reaches the pod, never its arguments).
ENV_MODEL_TOKEN = "TTSFLEET_MODEL_TOKEN"
