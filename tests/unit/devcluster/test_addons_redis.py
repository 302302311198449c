"""The redis add-on: a real redis-server on loopback whose password travels only through a 0600
config file and redis-cli's environment, never an argument a `ps` would show."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

from ttsfleet.devcluster import addons_redis
from ttsfleet.devcluster.cluster import free_port

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs Debian's redis-server")


def test_a_locked_redis_answers_with_the_password_and_refuses_without_it(tmp_path: Path) -> None:
    password = addons_redis.new_password()
    with addons_redis.running(tmp_path / "redis", free_port(), password=password) as redis:
        assert redis.address == f"127.0.0.1:{redis.port}"
        assert redis.cli("RPUSH", "jobs", "a", "b") == "2"
        anonymous = addons_redis.RedisServer(redis.port, None, redis.process, redis.cli_path)
        assert "NOAUTH" in anonymous.cli("LLEN", "jobs", check=False)
        with pytest.raises(RuntimeError, match="NOAUTH"):
            anonymous.cli("LLEN", "jobs")
        cmdline = Path(f"/proc/{redis.process.pid}/cmdline").read_bytes().decode()
        assert password not in cmdline
        config = tmp_path / "redis" / "redis.conf"
        assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert redis.process.poll() is not None, "stopping the add-on leaves no redis-server behind"


def test_an_open_redis_binds_loopback_only(tmp_path: Path) -> None:
    text = addons_redis.config_text(6390, tmp_path, None)
    assert "bind 127.0.0.1\n" in text and "requirepass" not in text
    assert 'save ""' in text  # nothing persisted beside the test
