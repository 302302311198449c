"""The TTSDeployment spec and status model: frozen dataclasses, one per schema object.

Each field's metadata (:func:`schema.prop`) is what ``kubectl explain`` shows and what the CRD
enforces; ``crds/`` is generated from these classes (``python -m ttsfleet.operator.crd``).
Rules that span fields are CEL (``RULES``) so the API server rejects bad specs before the
operator ever sees them; the operator re-checks nothing the schema already guarantees.
"""

# prop()/opt() are dataclasses.field() with schema metadata, which ruff cannot know.
# ruff: noqa: RUF009

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ttsfleet import contract, modelsource
from ttsfleet.operator.schema import IMMUTABLE, JSON, Rule, opt, parse, prop

GROUP = "tts.ttsfleet.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "TTSDeployment"
PLURAL = "ttsdeployments"
SINGULAR = "ttsdeployment"
SHORT_NAMES = ("ttsd",)

# Kubernetes' own quantity syntax (what controller-gen emits for resource.Quantity).
QUANTITY = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
    r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
# Requests and sizes cannot be negative (the pod and PVC validation would refuse them later).
NON_NEGATIVE_QUANTITY = QUANTITY.replace("^(\\+|-)?", "^\\+?", 1)


def _cron_field(value: str) -> str:
    """One cron field as robfig/cron (KEDA's cron scaler) parses it: *, ?, a value or range, an
    optional /step, comma-separated; values within the field's bounds."""
    part = f"(\\*|\\?|{value}(-{value})?)(/[1-9][0-9]*)?"
    return f"{part}(,{part})*"


_MINUTE = "([0-5]?[0-9])"
_HOUR = "([01]?[0-9]|2[0-3])"
_DAY = "(0?[1-9]|[12][0-9]|3[01])"
_MONTH = "(0?[1-9]|1[0-2]|(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec))"
_WEEKDAY = "(0?[0-6]|(?i:sun|mon|tue|wed|thu|fri|sat))"
# Five-field cron as KEDA's cron scaler takes it (minute hour day-of-month month day-of-week),
# with each field's range checked here: KEDA would otherwise refuse the ScaledObject later.
CRON = (
    f"^{_cron_field(_MINUTE)} +{_cron_field(_HOUR)} +{_cron_field(_DAY)} +{_cron_field(_MONTH)} "
    f"+{_cron_field(_WEEKDAY)}$"
)
# readyBy: a fixed minute and hour, any day of the month, and days of the week as plain values
# or ranges (schedules.derive_start moves those back a day when the start crosses midnight).
_WEEKDAYS = f"(\\*|{_WEEKDAY}(-{_WEEKDAY})?(,{_WEEKDAY}(-{_WEEKDAY})?)*)"
READY_BY_CRON = f"^{_MINUTE} +{_HOUR} +\\* +{_cron_field(_MONTH)} +{_WEEKDAYS}$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# Kubernetes label keys ([prefix/]name) and values, as the API server checks them on pods.
LABEL_KEY = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
LABEL_VALUE_SCHEMA = {"maxLength": 63, "pattern": LABEL_VALUE}
MAX_LABELS = 64
LABEL_KEYS_VALID = Rule(
    f"self.all(k, k.matches(r'{LABEL_KEY}'))",
    "keys must be label keys ([dns-subdomain/]name, name at most 63 characters of [-A-Za-z0-9_.])",
)
# An image reference as the container runtime parses it ([registry[:port]/]path[:tag][@digest]):
# anything else would only fail at pull time, as InvalidImageName on every pod.
_PATH_COMPONENT = "[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = "([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
IMAGE_REFERENCE = (
    f"^({_DOMAIN_COMPONENT}(\\.{_DOMAIN_COMPONENT})*(:[0-9]+)?/)?{_PATH_COMPONENT}(/{_PATH_COMPONENT})*"
    "(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)
# core/v1 Toleration, typed so that the API server refuses what the StatefulSet would.
TOLERATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "key": {"type": "string", "maxLength": 317, "pattern": LABEL_KEY},
        "operator": {"type": "string", "enum": ["Exists", "Equal"]},
        "value": {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE},
        "effect": {"type": "string", "enum": ["", "NoSchedule", "PreferNoSchedule", "NoExecute"]},
        "tolerationSeconds": {"type": "integer", "format": "int64"},
    },
    "x-kubernetes-validations": [
        {
            "rule": "!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
            "message": "value must be empty when operator is Exists",
            "fieldPath": ".value",
        },
        {
            "rule": "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
            "message": "tolerationSeconds needs effect NoExecute",
            "fieldPath": ".tolerationSeconds",
        },
        {
            "rule": "(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')",
            "message": "operator must be Exists when key is empty",
            "fieldPath": ".operator",
        },
    ],
}
# Only the shape; the rules that name what is wrong are CEL (ttsfleet.modelsource.RULES).
MODEL_SOURCE = r"^\S+$"
DEFAULT_STORAGE_CLASS = "local-ssd"
DEFAULT_PROMETHEUS = "http://prometheus-operated.monitoring.svc:9090"

# A timezone is valid iff CEL can convert a timestamp into it (Go's tz database, as KEDA uses).
# An unknown zone is an evaluation error, which the API server reports against this field.
VALID_TIMEZONE = Rule(
    "self == 'UTC' || timestamp('2000-01-01T00:00:00Z').getHours(self) >= 0",
    "must be a valid IANA time zone name",
)
# Go (and so CEL) reads "Local" as the zone of whichever process evaluates it: KEDA's, not the user's.
NOT_LOCAL_TIMEZONE = Rule("self != 'Local'", "must name a zone: Local would mean the KEDA operator's own zone")


@dataclass(frozen=True)
class ModelSpec:
    """The ChatTTS model the fleet serves and where the init container fetches it from."""

    # The fetcher checks the same rules (ttsfleet.modelsource): a source it would refuse is
    # refused here, at admission, naming the field, instead of crashing an init container later.
    RULES: ClassVar[tuple[Rule, ...]] = tuple(
        Rule(rule.cel, rule.message, field_path=f".{rule.field}") for rule in modelsource.RULES
    )

    source: str = prop(
        "Where the init container fetches the model from: hf://<namespace>/<name> (Hugging Face Hub, with "
        "revision pinned to a full commit hash), an https:// base URL (plain http:// only with "
        "allowInsecureHTTP), or a path (file:///… or /…) on a volume the image provides. Never put "
        "credentials in the URL: name a Secret in secretRef.",
        pattern=MODEL_SOURCE,
        max_length=1024,
    )
    name: str = prop(
        "Model name in Triton's model repository and in the cache. Immutable: the per-pod caches are keyed by it.",
        contract.MODEL_NAME,
        pattern=r"^[a-z0-9][a-z0-9_-]*$",
        max_length=63,
        rules=(IMMUTABLE,),
    )
    revision: str = prop(
        "Revision of the source: for hf:// a full 40-hex git commit (a branch such as main moves, so it "
        "is refused); otherwise the version label of the files at the URL or path. The per-pod cache is "
        "keyed by source, revision and sha256: changing any of them refetches (and rolls the fleet).",
        "main",
        max_length=128,
    )
    sha256: str | None = opt(
        "Expected SHA-256 of the source's weights manifest (ttsfleet-weights.json); the fetcher refuses a "
        "mismatch. Individual files are always checked against the manifest's own sums.",
        pattern=r"^[a-f0-9]{64}$",
        max_length=64,
    )
    approximate_size: str | None = opt(
        "Approximate size of the model on disk (a quantity such as 4Gi); must fit in modelCache.size.",
        pattern=NON_NEGATIVE_QUANTITY,
        max_length=32,
    )
    secret_ref: str | None = opt(
        "Name of a Secret in the same namespace holding the source's access token under secretKey. Only "
        "that key reaches the fetcher (as an environment variable, never in its arguments); it is sent as "
        "an Authorization: Bearer header (for hf://, as the Hugging Face token). A missing Secret makes "
        "the fleet Ready=False.",
        pattern=DNS_LABEL,
        max_length=253,
    )
    secret_key: str = prop(
        "Key of the token in the Secret named by secretRef.",
        "token",
        pattern=r"^[-._a-zA-Z0-9]+$",
        max_length=253,
    )
    allow_insecure_http: bool = prop(
        "Allow a plain http:// source (e.g. a model server inside the cluster). Off by default: anyone on "
        "the path could read the token or swap the weights (sha256 still guards the files). Redirects "
        "from https:// to http:// are refused either way.",
        False,
        name="allowInsecureHTTP",
    )


@dataclass(frozen=True)
class VoiceSpec:
    """A named speaker: a seed from which ChatTTS samples a speaker embedding, or the embedding."""

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule("has(self.seed) != has(self.embedding)", "set exactly one of seed or embedding"),
    )

    id: str = prop("Voice id that clients pass in the VOICE input.", pattern=DNS_LABEL, max_length=63)
    seed: int | None = opt("Seed for ChatTTS's random speaker sampler.", minimum=0, maximum=2**31 - 1)
    embedding: str | None = opt("ChatTTS's encoded speaker embedding string.", min_length=1, max_length=65536)


def _default_voices() -> tuple[VoiceSpec, ...]:
    return (VoiceSpec(id="default", seed=42),)


@dataclass(frozen=True)
class ResourcesSpec:
    """Compute for each worker pod. GPUs are requested as nvidia.com/gpu (requests = limits)."""

    # The pod validation refuses a limit below its request; say so at admission instead.
    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "!has(self.cpuLimit) || !isQuantity(string(self.cpuLimit)) || !isQuantity(string(self.cpu)) || "
            "!quantity(string(self.cpuLimit)).isLessThan(quantity(string(self.cpu)))",
            "cpuLimit must not be below cpu",
            field_path=".cpuLimit",
        ),
        Rule(
            "!has(self.memoryLimit) || !isQuantity(string(self.memoryLimit)) || !isQuantity(string(self.memory)) || "
            "!quantity(string(self.memoryLimit)).isLessThan(quantity(string(self.memory)))",
            "memoryLimit must not be below memory",
            field_path=".memoryLimit",
        ),
    )

    gpu: int = prop("nvidia.com/gpu per pod (0 runs on CPU, for tests only).", 1, minimum=0, maximum=8)
    cpu: int | str = prop(
        "CPU request per pod. The worker runs this many compute threads (rounded up; cpuLimit instead when set).",
        "4",
        pattern=NON_NEGATIVE_QUANTITY,
        minimum=0,
    )
    memory: int | str = prop("Memory request per pod.", "16Gi", pattern=NON_NEGATIVE_QUANTITY, minimum=0)
    cpu_limit: int | str | None = opt(
        "CPU limit per pod; none by default (no throttling).", pattern=NON_NEGATIVE_QUANTITY, minimum=0
    )
    memory_limit: int | str | None = opt(
        "Memory limit per pod; defaults to the request.", pattern=NON_NEGATIVE_QUANTITY, minimum=0
    )


@dataclass(frozen=True)
class TopologySpreadSpec:
    """How worker pods spread across failure domains (zones by default)."""

    enabled: bool = prop("Add a topology spread constraint for the worker pods.", True)
    topology_key: str = prop(
        "Node label that defines the domains.", "topology.kubernetes.io/zone", pattern=LABEL_KEY, max_length=317
    )
    max_skew: int = prop("Largest difference in pod count between two domains.", 1, minimum=1, maximum=100)
    when_unsatisfiable: str = prop(
        "DoNotSchedule keeps pods Pending rather than skewing; ScheduleAnyway only prefers spreading.",
        "ScheduleAnyway",
        enum=("DoNotSchedule", "ScheduleAnyway"),
    )


@dataclass(frozen=True)
class ModelCacheSpec:
    """The per-pod model cache: a PVC from volumeClaimTemplates, on local SSD by default."""

    storage_class_name: str = prop(
        "StorageClass of the cache PVCs. Immutable: changing it would orphan the existing caches.",
        DEFAULT_STORAGE_CLASS,
        pattern=DNS_SUBDOMAIN,
        max_length=253,
        rules=(IMMUTABLE,),
    )
    size: str = prop(
        "Size of each cache PVC. Immutable (volumeClaimTemplates cannot change).",
        "20Gi",
        pattern=NON_NEGATIVE_QUANTITY,
        max_length=32,
        rules=(
            IMMUTABLE,
            Rule(
                "!isQuantity(self) || quantity(self).isGreaterThan(quantity('0'))",
                "must be larger than zero (a PersistentVolumeClaim cannot request nothing)",
            ),
        ),
    )
    keep_on_scale_down: bool = prop(
        "Keep the cache PVCs of pods removed by a scale-down, so scaling up again starts warm.", True
    )
    keep_on_delete: bool = prop("Keep the cache PVCs when the TTSDeployment is deleted.", False)


@dataclass(frozen=True)
class WarmupSpec:
    """Warmup before a pod reports ready: each sentence is synthesized once per voice."""

    sentences: tuple[str, ...] = prop(
        "Sentences synthesized per voice before the model turns ready.",
        factory=lambda: ("Hello from ttsfleet.",),
        max_items=16,
        # Blank text is refused by the worker: warmup would never finish.
        item_schema={"minLength": 1, "maxLength": 100_000, "pattern": r"\S"},
    )
    timeout_seconds: int = prop(
        "How long a pod may take from start to ready (fetch + load + warmup) before it is restarted.",
        900,
        minimum=30,
        maximum=7200,
    )


@dataclass(frozen=True)
class BatchingSpec:
    """Triton dynamic batching of concurrent requests into one ChatTTS inference."""

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "!has(self.maxOpenRequests) || self.maxOpenRequests >= self.maxBatchSize",
            "maxOpenRequests must be at least maxBatchSize, or batches can never fill",
            field_path=".maxOpenRequests",
        ),
    )

    max_batch_size: int = prop("Largest batch Triton forms.", 8, minimum=1, maximum=64)
    max_queue_delay_microseconds: int = prop(
        "How long Triton holds a request to fill a batch. Keep it short: the worker also batches "
        "requests that arrive while ChatTTS is busy, so a long delay only adds latency.",
        500,
        minimum=0,
        maximum=1_000_000,
    )
    instances: int = prop("Model instances per pod (per GPU).", 1, minimum=1, maximum=8)
    max_open_requests: int | None = opt(
        "Backpressure: open requests (queued or streaming) one pod holds. Beyond it a new request is "
        "refused at once with a retryable UNAVAILABLE error ('ttsfleet: overloaded'), which the client "
        "library retries on another pod. Default: 4 x maxBatchSize.",
        minimum=1,
        maximum=4096,
    )


@dataclass(frozen=True)
class RolloutSpec:
    """How spec changes reach running pods."""

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "self.strategy == 'RollingUpdate' || self.partition == 0",
            "partition is only meaningful with strategy RollingUpdate",
            field_path=".partition",
        ),
    )

    strategy: str = prop(
        "RollingUpdate replaces pods from the highest ordinal down; OnDelete waits for pods to be deleted.",
        "RollingUpdate",
        enum=("RollingUpdate", "OnDelete"),
    )
    partition: int = prop(
        "Only pods with an ordinal >= partition are updated (canary); 0 updates all.", 0, minimum=0, maximum=1000
    )


@dataclass(frozen=True)
class DisruptionSpec:
    """Voluntary disruptions (drains, rollouts) and how a stopping pod drains its streams."""

    max_unavailable: int | str = prop(
        "PodDisruptionBudget maxUnavailable (number or percentage); the budget exists when more than one "
        "replica can exist.",
        1,
        # A PodDisruptionBudget refuses negative counts and percentages above 100%.
        pattern=r"^([0-9]+|([0-9]|[1-9][0-9]|100)%)$",
        minimum=0,
    )
    drain_seconds: int = prop(
        "How long a stopping pod may keep serving its open streams after it leaves the endpoints.",
        120,
        minimum=0,
        maximum=3600,
    )


@dataclass(frozen=True)
class ScheduleSpec:
    """A cron pre-scaling window: at least `replicas` pods between start (or readyBy) and end."""

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule("has(self.start) != has(self.readyBy)", "set exactly one of start or readyBy"),
        Rule("!has(self.start) || self.start != self.end", "start and end must differ", field_path=".end"),
        Rule("!has(self.readyBy) || self.readyBy != self.end", "readyBy and end must differ", field_path=".end"),
    )

    name: str = prop("Schedule name, unique within the fleet.", pattern=DNS_LABEL, max_length=63)
    end: str = prop("Cron expression (5 fields) at which the window ends.", pattern=CRON, max_length=100)
    replicas: int = prop("Replicas the fleet holds at least during the window.", minimum=1, maximum=1000)
    timezone: str = prop(
        "IANA time zone of the cron expressions, e.g. Europe/Paris.",
        "UTC",
        min_length=1,
        max_length=64,
        rules=(VALID_TIMEZONE, NOT_LOCAL_TIMEZONE),
    )
    start: str | None = opt("Cron expression (5 fields) at which scaling up starts.", pattern=CRON, max_length=100)
    ready_by: str | None = opt(
        "Cron expression (5 fields: fixed minute and hour, day-of-month *) by which the replicas must be "
        "Ready; the operator derives the start from the fleet's measured cold start plus "
        "autoscaling.leadTimeMarginSeconds.",
        pattern=READY_BY_CRON,
        max_length=100,
    )


# host:port as KEDA's redis scalers dial it: a DNS name, an IPv4 address or a bracketed IPv6
# address, and a port in 1..65535. No scheme and no credentials (those go in passwordSecretRef).
_PORT = "([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_HOST = f"({DNS_SUBDOMAIN[1:-1]}|\\[[0-9a-fA-F:.]+\\])"
REDIS_ADDRESS = f"^{_HOST}:{_PORT}$"
# A Redis key as this CRD accepts it: printable, no whitespace (KEDA passes it through unchanged).
REDIS_KEY = r"^\S+$"


@dataclass(frozen=True)
class SecretKeySelector:
    """One key of a Secret in the fleet's namespace. Only KEDA reads it (through the
    TriggerAuthentication the operator creates): the operator holds no right on Secrets."""

    name: str = prop("Name of the Secret.", pattern=DNS_SUBDOMAIN, max_length=253)
    key: str = prop("Key in the Secret.", pattern=r"^[-._a-zA-Z0-9]+$", max_length=253)


@dataclass(frozen=True)
class RedisStreamSpec:
    """A Redis Stream of jobs read by a consumer group: KEDA scales on the group's pending entries
    (XPENDING). The stream's own length is no signal: it does not shrink when jobs are consumed."""

    name: str = prop("Stream key.", pattern=REDIS_KEY, max_length=1024)
    consumer_group: str = prop("Consumer group the fleet's job readers belong to.", pattern=REDIS_KEY, max_length=256)


@dataclass(frozen=True)
class RedisSpec:
    """A KEDA redis trigger: a Redis list (or a Stream with a consumer group) of pending jobs in
    front of the fleet. It exists while no pod runs, so it can wake a fleet from zero."""

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule("has(self.listName) != has(self.stream)", "set exactly one of listName or stream"),
    )

    address: str = prop(
        "Redis server as host:port, e.g. redis.jobs.svc.cluster.local:6379 (KEDA's operator connects to it).",
        max_length=260,
        rules=(
            Rule(
                f"self.matches(r'{REDIS_ADDRESS}')",
                "must be host:port (a DNS name, IPv4 or [IPv6] address, and a port 1-65535), "
                "without scheme or credentials",
            ),
        ),
    )
    list_name: str | None = opt(
        "Key of a Redis list of pending jobs (LLEN is the queue length).", pattern=REDIS_KEY, max_length=1024
    )
    stream: RedisStreamSpec | None = opt("A Redis Stream and consumer group of pending jobs.")
    target_length: int = prop(
        "Pending jobs per replica KEDA aims for: the list's length, or the stream group's pending "
        "entries, divided by this is the replica count.",
        5,
        minimum=1,
        maximum=1_000_000,
    )
    activation_length: int = prop(
        "The trigger is active (wakes a fleet at zero replicas) when more jobs than this are pending.",
        0,
        minimum=0,
        maximum=1_000_000,
    )
    database_index: int = prop("Redis logical database.", 0, minimum=0, maximum=65535)
    enable_tls: bool = prop(
        "Connect over TLS (the server certificate is checked against the KEDA operator's trusted roots).",
        False,
        name="enableTLS",
    )
    username: str | None = opt(
        "Redis ACL user (Redis 6+); the default user when unset.", pattern=REDIS_KEY, max_length=256
    )
    password_secret_ref: SecretKeySelector | None = opt(
        "The Redis password, as a key of a Secret in the fleet's namespace. The operator passes only the "
        "reference to KEDA (a TriggerAuthentication it creates): the password never appears in the "
        "ScaledObject, the fleet's status or its events."
    )


@dataclass(frozen=True)
class AutoscalingSpec:
    """KEDA autoscaling on per-pod queue length plus cron pre-scaling. The ScaledObject targets this
    TTSDeployment's scale subresource, so the autoscaler writes spec.replicas and the operator
    follows it."""

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "self.minReplicas <= self.maxReplicas",
            "minReplicas must not exceed maxReplicas",
            field_path=".minReplicas",
        ),
        Rule(
            "self.schedules.all(s, s.replicas <= self.maxReplicas)",
            "schedule replicas must not exceed maxReplicas",
            field_path=".schedules",
        ),
        # A fleet with no pod exports no queue metric, so the queue trigger can never wake it:
        # only a schedule (a cron trigger, active whatever the load) or a Redis queue of jobs
        # (which exists while no pod runs) brings it back from zero.
        Rule(
            "self.minReplicas > 0 || size(self.schedules) > 0 || has(self.redis)",
            "minReplicas 0 needs a schedule or a redis queue to wake the fleet "
            "(with no pod running there is no queue metric to scale up on)",
            field_path=".minReplicas",
        ),
    )

    enabled: bool = prop("Create a KEDA ScaledObject for the fleet.", False)
    min_replicas: int = prop(
        "Lowest replica count; 0 (scale to zero) only with a schedule or a redis queue that wakes the fleet.",
        1,
        minimum=0,
        maximum=1000,
    )
    max_replicas: int = prop("Highest replica count.", 4, minimum=1, maximum=1000)
    target_queue_length: int = prop(
        f"Target {contract.METRIC_QUEUE_LENGTH} per pod (queued plus in-flight requests).", 4, minimum=1
    )
    polling_interval_seconds: int = prop("How often KEDA queries the triggers.", 15, minimum=1, maximum=3600)
    cooldown_seconds: int = prop(
        "KEDA cooldown before scaling to zero after the last active trigger.", 300, minimum=0, maximum=86400
    )
    scale_down_stabilization_seconds: int = prop(
        "HPA scale-down stabilisation window: the highest recommendation in this window wins.",
        300,
        minimum=0,
        maximum=3600,
    )
    prometheus_address: str = prop(
        "Prometheus server the queue-length trigger queries.",
        DEFAULT_PROMETHEUS,
        pattern=r"^https?://[^\s/?#]+(/\S*)?$",
        max_length=1024,
    )
    lead_time_margin_seconds: int = prop(
        "Margin added to the measured cold start when deriving a schedule's start from readyBy.",
        120,
        minimum=0,
        maximum=3600,
    )
    schedules: tuple[ScheduleSpec, ...] = prop(
        "Cron pre-scaling windows (e.g. before peak hours).",
        factory=tuple,
        max_items=16,
        list_map_keys=("name",),
    )
    redis: RedisSpec | None = opt(
        "Also scale on a Redis list or Stream of pending jobs in front of the fleet (KEDA's redis or "
        "redis-streams trigger). Without a ServiceMonitor the per-pod queue trigger is then left out: "
        "nothing would scrape its metric, and a failing trigger holds off every scale-down."
    )


@dataclass(frozen=True)
class ServiceSpec:
    """The client Service: only what clients use. Triton's metrics port is not on it (Prometheus
    scrapes the pods through the headless Service), so a LoadBalancer never publishes metrics."""

    type: str = prop("Service type.", "ClusterIP", enum=("ClusterIP", "NodePort", "LoadBalancer"))
    grpc_port: int = prop("Service port for Triton gRPC.", contract.GRPC_PORT, minimum=1, maximum=65535)
    http: bool = prop(
        "Also serve Triton's HTTP/REST API (KServe v2) to clients: on the Services and in the NetworkPolicy. "
        "Off by default: clients stream over gRPC, and every open port is one more to defend.",
        False,
    )
    http_port: int = prop(
        "Service port for Triton HTTP (with http: true).", contract.HTTP_PORT, minimum=1, maximum=65535
    )


@dataclass(frozen=True)
class LabelRequirementSpec:
    """One matchExpressions entry of a label selector (metav1.LabelSelectorRequirement)."""

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "(self.operator in ['In', 'NotIn']) == (size(self.values) > 0)",
            "In and NotIn need values; Exists and DoesNotExist take none",
            field_path=".values",
        ),
    )

    key: str = prop("Label key.", max_length=317, pattern=LABEL_KEY)
    operator: str = prop("How the key relates to the values.", enum=("In", "NotIn", "Exists", "DoesNotExist"))
    values: tuple[str, ...] = prop(
        "Values for In and NotIn.", factory=tuple, max_items=64, item_schema=LABEL_VALUE_SCHEMA
    )


@dataclass(frozen=True)
class LabelSelectorSpec:
    """A label selector (metav1.LabelSelector); empty selects everything."""

    match_labels: dict[str, str] = prop(
        "Labels that must all match.",
        factory=dict,
        max_properties=MAX_LABELS,
        item_schema=LABEL_VALUE_SCHEMA,
        rules=(LABEL_KEYS_VALID,),
    )
    match_expressions: tuple[LabelRequirementSpec, ...] = prop(
        "Requirements that must all hold.", factory=tuple, max_items=16
    )


@dataclass(frozen=True)
class IPBlockSpec:
    """Addresses outside the cluster (e.g. load balancer clients, where the source IP is kept)."""

    cidr: str = prop(
        "CIDR allowed, e.g. 203.0.113.0/24.", max_length=64, rules=(Rule("isCIDR(self)", "must be a CIDR"),)
    )
    except_: tuple[str, ...] = prop(
        "CIDRs inside cidr that stay refused.",
        name="except",
        factory=tuple,
        max_items=32,
        item_schema={
            "maxLength": 64,
            "x-kubernetes-validations": [{"rule": "isCIDR(self)", "message": "must be a CIDR"}],
        },
    )


@dataclass(frozen=True)
class PeerSpec:
    """Who may connect (networking/v1 NetworkPolicyPeer): pods picked by namespaceSelector and/or
    podSelector, or an ipBlock."""

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "has(self.ipBlock) != (has(self.namespaceSelector) || has(self.podSelector))",
            "set ipBlock, or namespaceSelector and/or podSelector",
        ),
    )

    namespace_selector: LabelSelectorSpec | None = opt(
        "Namespaces whose pods may connect ({} is every namespace). Without it, podSelector picks pods in "
        "the fleet's own namespace."
    )
    pod_selector: LabelSelectorSpec | None = opt(
        "Pods that may connect, within the namespaces namespaceSelector picks (or the fleet's namespace)."
    )
    ip_block: IPBlockSpec | None = opt("Addresses that may connect.")


@dataclass(frozen=True)
class NetworkPolicySpec:
    """Ingress to the worker pods. Clients reach the serving ports (gRPC, and HTTP with
    service.http) from the fleet's namespace and the listed peers; Prometheus reaches the metrics
    port from monitoring.prometheusNamespace; nothing else gets in. Enforced only where the
    cluster's network plugin implements NetworkPolicy."""

    enabled: bool = prop("Create a NetworkPolicy for the fleet's pods.", True)
    allow_same_namespace: bool = prop("Any pod in the fleet's namespace may use the serving ports.", True)
    clients: tuple[PeerSpec, ...] = prop(
        "More peers allowed on the serving ports, e.g. a gateway's namespace.", factory=tuple, max_items=32
    )


@dataclass(frozen=True)
class MonitoringSpec:
    """Prometheus Operator integration."""

    service_monitor: bool = prop("Create a ServiceMonitor for the metrics port.", False)
    interval: str = prop("Scrape interval.", "15s", pattern=r"^[1-9][0-9]*(ms|s|m)$", max_length=16)
    labels: dict[str, str] = prop(
        "Extra labels on the ServiceMonitor (for the Prometheus serviceMonitorSelector).",
        factory=dict,
        max_properties=MAX_LABELS,
        item_schema=LABEL_VALUE_SCHEMA,
        rules=(LABEL_KEYS_VALID,),
    )
    prometheus_namespace: str = prop(
        "Namespace of the Prometheus that scrapes the fleet: the NetworkPolicy admits only it on the metrics port.",
        "monitoring",
        pattern=DNS_LABEL,
        max_length=63,
    )


@dataclass(frozen=True)
class TTSDeploymentSpec:
    """Desired state of a fleet of ChatTTS servers on Triton."""

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "self.voices.exists(v, v.id == self.defaultVoice)",
            "defaultVoice must be the id of one of voices",
            field_path=".defaultVoice",
        ),
        # No rule ties replicas to autoscaling.minReplicas..maxReplicas: with autoscaling on, the
        # autoscaler owns replicas and brings them within bounds itself, and such a rule would make
        # the API server refuse a GitOps sync (a manifest without replicas defaults them to 1; a
        # new minReplicas above the autoscaler's current count) instead of letting KEDA adjust.
        Rule(
            "!has(self.model.approximateSize) || "
            "quantity(self.model.approximateSize).isLessThan(quantity(self.modelCache.size))",
            "model.approximateSize must be smaller than modelCache.size",
            field_path=".modelCache.size",
        ),
        Rule(
            "self.warmup.sentences.all(s, size(s) <= self.maxTextChars)",
            "every warmup sentence must fit in maxTextChars (the worker refuses longer text)",
            field_path=".warmup.sentences",
        ),
    )

    image: str = prop(
        "Worker container image (ttsfleet/worker:<version>, or pinned by @sha256:<digest>).",
        pattern=IMAGE_REFERENCE,
        max_length=512,
    )
    model: ModelSpec = prop("Model to serve.")
    replicas: int = prop(
        "Number of worker pods. With autoscaling enabled, the autoscaler writes it through the scale "
        "subresource (leave it out of GitOps manifests) and keeps it within minReplicas..maxReplicas.",
        1,
        minimum=0,
        maximum=1000,
    )
    image_pull_policy: str = prop(
        "Pull policy of the worker image.", "IfNotPresent", enum=("Always", "IfNotPresent", "Never")
    )
    voices: tuple[VoiceSpec, ...] = prop(
        "Voices the fleet serves.",
        factory=_default_voices,
        min_items=1,
        max_items=64,
        list_map_keys=("id",),
    )
    default_voice: str = prop("Voice used when a request names none.", "default", max_length=63)
    max_text_chars: int = prop("Longest text a request may carry.", 2000, minimum=1, maximum=100_000)
    resources: ResourcesSpec = prop("Compute per pod.", factory=ResourcesSpec)
    node_selector: dict[str, str] = prop(
        "Node labels the worker pods require.",
        factory=dict,
        max_properties=MAX_LABELS,
        item_schema=LABEL_VALUE_SCHEMA,
        rules=(LABEL_KEYS_VALID,),
    )
    tolerations: tuple[JSON, ...] = prop(
        "Pod tolerations (core/v1 Toleration). A toleration for nvidia.com/gpu is added when GPUs are requested.",
        factory=tuple,
        max_items=32,
        item_schema=TOLERATION_SCHEMA,
    )
    affinity: JSON | None = opt("Pod affinity (core/v1 Affinity), passed through unchanged.")
    topology_spread: TopologySpreadSpec = prop("Spread of pods across zones.", factory=TopologySpreadSpec)
    priority_class_name: str | None = opt("PriorityClass of the worker pods.", pattern=DNS_SUBDOMAIN, max_length=253)
    service_account_name: str | None = opt("ServiceAccount of the worker pods.", pattern=DNS_SUBDOMAIN, max_length=253)
    model_cache: ModelCacheSpec = prop("Per-pod model cache volume.", factory=ModelCacheSpec)
    warmup: WarmupSpec = prop("Warmup before readiness.", factory=WarmupSpec)
    batching: BatchingSpec = prop("Triton dynamic batching.", factory=BatchingSpec)
    rollout: RolloutSpec = prop("Update strategy.", factory=RolloutSpec)
    disruption: DisruptionSpec = prop("Disruption budget and draining.", factory=DisruptionSpec)
    autoscaling: AutoscalingSpec = prop("Autoscaling with KEDA.", factory=AutoscalingSpec)
    service: ServiceSpec = prop("Client Service.", factory=ServiceSpec)
    monitoring: MonitoringSpec = prop("Prometheus monitoring.", factory=MonitoringSpec)
    network_policy: NetworkPolicySpec = prop("Who may connect to the pods.", factory=NetworkPolicySpec)


@dataclass(frozen=True)
class ConditionStatus:
    """A status condition (metav1.Condition shape)."""

    type: str = prop("Ready, Progressing or Degraded.", max_length=64)
    status: str = prop("True, False or Unknown.", enum=("True", "False", "Unknown"))
    reason: str = prop("CamelCase reason of the last transition or update.", max_length=128)
    last_transition_time: str = prop("When status last flipped.", max_length=64)
    message: str = prop("Human-readable detail.", "", max_length=4096)
    observed_generation: int | None = opt("Generation the condition was computed for.", minimum=0)


@dataclass(frozen=True)
class ScheduleStatus:
    """What the operator derived for one schedule."""

    name: str = prop("Schedule name.", max_length=63)
    start: str = prop("Cron start in effect (derived from readyBy when given).", max_length=100)
    lead_seconds: int | None = opt("Lead time subtracted from readyBy.", minimum=0)


@dataclass(frozen=True)
class TTSDeploymentStatus:
    """Observed state of the fleet."""

    observed_generation: int | None = opt("Generation of the spec last reconciled.", minimum=0)
    replicas: int | None = opt("Pods of the StatefulSet (scale subresource status).", minimum=0)
    ready_replicas: int | None = opt("Pods that passed readiness (model loaded and warmed).", minimum=0)
    updated_replicas: int | None = opt("Pods at the update revision.", minimum=0)
    replicas_summary: str | None = opt("ready/desired, for kubectl get.", max_length=32)
    current_revision: str | None = opt("StatefulSet current revision.", max_length=253)
    update_revision: str | None = opt("StatefulSet update revision.", max_length=253)
    selector: str | None = opt("Label selector of the pods (scale subresource).", max_length=1024)
    cold_start_p95_seconds: float | None = opt(
        "Rolling p95 of pod creation to Ready over recent pods, for schedule lead times."
    )
    cold_start_samples: tuple[float, ...] | None = opt("Recent cold starts in seconds.", max_items=32)
    sampled_pods: tuple[str, ...] | None = opt("Pod uids already sampled.", max_items=32)
    schedules: tuple[ScheduleStatus, ...] | None = opt("Derived schedule starts.", max_items=16)
    conditions: tuple[ConditionStatus, ...] | None = opt(
        "Ready, Progressing and Degraded.", max_items=8, list_map_keys=("type",)
    )


def parse_spec(raw: Any) -> TTSDeploymentSpec:
    return parse(TTSDeploymentSpec, raw, "spec")
