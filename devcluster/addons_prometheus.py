"""Prometheus from Debian's ``prometheus`` package, on loopback, for KEDA's prometheus trigger.

It scrapes itself only: fleet pods on kwok nodes have no container to scrape. Once real nodes
run the worker, the scrape configuration is to be generated from the ServiceMonitors the
operator creates (what the Prometheus Operator does in a user's cluster).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

PACKAGE = "prometheus"


def binary() -> Path:
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    if not found:
        raise RuntimeError(
            "the prometheus add-on needs Debian's `prometheus` package (devcluster/system-packages.sh installs it)"
        )
    return Path(found)


def write_config(directory: Path, port: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
        "scrape_configs": [{"job_name": "prometheus", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}],
    }
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def argv(binary_path: Path, config: Path, data: Path, port: int) -> list[str]:
    return [
        str(binary_path),
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=2h",
        "--log.level=warn",
    ]


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}"
