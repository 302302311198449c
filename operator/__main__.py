"""Entry point: ``python -m ttsfleet.operator`` / ``ttsfleet-operator``.

Runs the operator against the current kube context (or in-cluster credentials), watching the
given namespaces or all of them. Logs are JSON lines by default.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import socket
import sys
from typing import Any, cast

import kopf
import prometheus_client

from ttsfleet.operator import heap, kopf_rescan, peering
from ttsfleet.operator.handlers import Options, build_registry


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ttsfleet-operator", description=__doc__)
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[], help="namespace (glob) to serve; repeatable")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="serve every namespace")
    parser.add_argument("--liveness", metavar="URL", help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error"), help="default: info"
    )
    parser.add_argument("--log-format", default="json", choices=("json", "plain"), help="default: json")
    parser.add_argument("--resync-seconds", type=float, default=30.0, help="periodic reconcile of every fleet")
    parser.add_argument(
        "--workers",
        type=int,
        default=Options.max_workers,
        help=f"fleets reconciled at once (default: {Options.max_workers})",
    )
    parser.add_argument(
        "--peering",
        metavar="NAME",
        help="run as one of several replicas (KopfPeering NAME; only the highest priority is active)",
    )
    parser.add_argument(
        "--priority",
        type=int,
        help="peering priority of this replica (default with --peering: random, so that identical replicas "
        "of a Deployment never tie; kopf pauses every replica of a tie)",
    )
    parser.add_argument(
        "--peering-lifetime",
        type=int,
        default=peering.DEFAULT_LIFETIME_SECONDS,
        metavar="SECONDS",
        help="how long a replica's keep-alive counts: a standby takes over at most this long after the active "
        f"replica dies (default: {peering.DEFAULT_LIFETIME_SECONDS})",
    )
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port (off by default)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, not {args.workers}")
    if args.priority is None:
        args.priority = secrets.randbelow(2**31 - 1) + 1 if args.peering else 0
    return args


def _configure_logging(level: str, log_format: str) -> None:
    fmt = kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL
    kopf.configure(debug=level == "debug", quiet=level in ("warning", "error"), log_format=fmt, log_refkey="fleet")
    logging.getLogger().setLevel(level.upper())
    # kopf reports every watch-event handler call at INFO (several per pod change): only the
    # failures matter unless debugging. Our own transitions and prunes stay at INFO.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING if level != "debug" else logging.DEBUG)
    # The client library logs every request at DEBUG; keep it out unless asked for.
    logging.getLogger("urllib3").setLevel(logging.WARNING if level != "debug" else logging.DEBUG)


def main(argv: list[str] | None = None) -> int:
    heap.few_arenas()
    args = parse_args(sys.argv[1:] if argv is None else argv)
    _configure_logging(args.log_level, args.log_format)
    namespaces = tuple(args.namespace)
    # kopf's peering identity, chosen here so that the resync can recognise itself among peers.
    identity = f"{socket.gethostname()}@{os.getpid()}"
    options = Options(
        namespaces=namespaces,
        clusterwide=args.all_namespaces or not namespaces,
        resync_seconds=args.resync_seconds,
        max_workers=args.workers,
        peering=args.peering,
        identity=identity,
        priority=args.priority,
        peering_lifetime=args.peering_lifetime,
    )
    registry = build_registry()
    # Shared with kopf so that the operator can have it rescan discovery (discovery.py says why).
    insights = kopf_rescan.new_insights()
    memo = kopf.Memo(options=options, registry=registry, insights=insights)
    if args.metrics_port:
        prometheus_client.start_http_server(args.metrics_port)
    try:
        asyncio.run(
            kopf.operator(
                registry=registry,
                insights=insights,
                memo=memo,
                clusterwide=options.clusterwide,
                namespaces=namespaces,
                liveness_endpoint=args.liveness,
                standalone=args.peering is None,
                peering_name=args.peering,
                priority=args.priority,
                # kopf types it as a NewType of str that it does not export.
                identity=cast(Any, identity),
            )
        )
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
