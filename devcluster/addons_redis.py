"""Debian's redis-server on loopback: the queue of pending jobs in front of a fleet, for KEDA's
redis and redis-streams triggers (tests and the demo).

KEDA's operator runs out of cluster next to the control plane, so it dials ``127.0.0.1:<port>``
directly. An optional password is set in a 0600 config file and handed to ``redis-cli`` through
``REDISCLI_AUTH`` (the environment): never in an argument, where ``ps`` would show it. Nothing is
persisted (``save ""``, no AOF); the directory holds only the config and the log.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ttsfleet.devcluster.waiting import wait_for

PACKAGE = "redis-server"


def binaries() -> tuple[Path, Path]:
    """redis-server and redis-cli (Debian's redis-server package pulls in redis-tools)."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if not server or not cli:
        raise RuntimeError(
            "the redis add-on needs Debian's `redis-server` package (devcluster/system-packages.sh installs it)"
        )
    return Path(server), Path(cli)


def new_password() -> str:
    return secrets.token_urlsafe(24)


def config_text(port: int, directory: Path, password: str | None) -> str:
    lines = [
        f"port {port}",
        "bind 127.0.0.1",
        "protected-mode yes",
        'save ""',
        "appendonly no",
        f"dir {directory}",
        f"logfile {directory / 'redis.log'}",
    ]
    if password is not None:
        lines.append(f"requirepass {password}")
    return "\n".join(lines) + "\n"


@dataclass
class RedisServer:
    port: int
    password: str | None
    process: subprocess.Popen[bytes]
    cli_path: Path

    @property
    def address(self) -> str:
        """host:port, as spec.autoscaling.redis.address takes it."""
        return f"127.0.0.1:{self.port}"

    def cli(self, *args: str, check: bool = True) -> str:
        """One redis-cli command; the password (if any) goes through the environment."""
        env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
        if self.password is not None:
            env["REDISCLI_AUTH"] = self.password
        result = subprocess.run(
            [str(self.cli_path), "-h", "127.0.0.1", "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )
        # redis-cli exits 0 on most server errors and prints them instead.
        if check and (result.returncode != 0 or result.stdout.startswith(("ERR", "NOAUTH", "WRONGPASS"))):
            raise RuntimeError(f"redis-cli {args[0] if args else ''}: {result.stdout.strip()} {result.stderr.strip()}")
        return result.stdout.strip()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def start(directory: Path, port: int, *, password: str | None = None) -> RedisServer:
    server, cli = binaries()
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "redis.conf"
    config.write_text(config_text(port, directory, password))
    config.chmod(0o600)
    process = subprocess.Popen(
        [str(server), str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: stop() ends it and nothing else
    )
    redis = RedisServer(port=port, password=password, process=process, cli_path=cli)
    try:
        wait_for(
            lambda: process.poll() is None and redis.cli("PING", check=False) == "PONG",
            what=f"redis-server on 127.0.0.1:{port}",
            timeout=30,
            describe=lambda: (directory / "redis.log").read_text(errors="replace")[-2000:],
        )
    except BaseException:
        redis.stop()
        raise
    return redis


@contextmanager
def running(directory: Path, port: int, *, password: str | None = None) -> Iterator[RedisServer]:
    redis = start(directory, port, password=password)
    try:
        yield redis
    finally:
        redis.stop()
