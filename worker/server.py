"""Launch a real ``tritonserver`` on our model repository: tests, the demo and the pod entry point.

The binary and the python backend come from the ``nvidia-pytriton`` wheel (Triton 2.51), which
runs on CPU-only machines as well as on GPUs. What it needs, found in a trial:

* a backend directory with the wheel's ``backends/python`` plus the stub built for the running
  Python copied in as ``triton_python_backend_stub``;
* ``LD_LIBRARY_PATH`` with this interpreter's lib dir (else the stub may pick another
  ``libpython3.11``) and the wheel's bundled libs;
* this interpreter's ``bin`` first on ``PATH``, so the embedded interpreter finds our venv prefix
  (and numpy<2) instead of the system one;
* loopback addresses unless told otherwise (it binds 0.0.0.0 by default).

The model is loaded through the repository API after the endpoints are up (explicit model
control), so the probe endpoints answer "not ready" during loading and warmup instead of
refusing connections. Between the endpoints coming up and the load request (tens of ms, the
launcher polls at 50 ms) Triton knows no model yet and ``/v2/health/ready`` says ready;
``/v2/models/<m>/ready`` is false throughout, which makes it the safer probe. Triton's
``--exit-timeout-secs`` bounds the drain on SIGTERM.

Explicit model control means Triton accepts load requests, and a load request may carry a
``config`` and model files in its body: Python that the server would run. So every admin API
group (``ADMIN_APIS``: model repository, model config, shared memory, trace, logging) is
restricted with Triton's ``--http-restricted-api`` / ``--grpc-restricted-protocol`` to requests
carrying a key that each launcher draws afresh (``secrets``) and keeps to itself: it sends it
only on its own repository requests, never logs it, and scrubs it from any error it logs.
Inference, health, metadata and statistics stay open; metrics have their own port.

Where the key travels: Triton reads these options from its command line only (no file, no
environment variable; ``tritonserver --help`` of 2.51), and ``/proc/<pid>/cmdline`` is readable
by any process in the same PID namespace. In a pod that namespace holds only this container's
processes (the launcher, tritonserver and its python-backend stubs, all our code under one UID;
the StatefulSet does not share the pod's process namespace), and whoever can ``kubectl exec``
into it controls the worker anyway. Outside the pod only the node's host PID namespace sees it
(node root, or pods with ``hostPID``, which the baseline Pod Security Standard forbids). The key
guards one worker's admin APIs and dies with the process. Model control stays explicit (rather
than loading at start-up, before the endpoints exist) so probes get a clear "not ready" while
the model loads and warms up, and the launcher sees a failed load.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import FrameType

from ttsfleet import contract, logs
from ttsfleet.contract import ServingConfig, render_triton_config
from ttsfleet.ports import free_port
from ttsfleet.worker import supervisor

log = logging.getLogger("ttsfleet.worker.server")

ENV_TRITONSERVER = "TTSFLEET_TRITONSERVER"  # override the binary (e.g. the base image's own)

# Triton's restricted API groups (2.51 knows health, metadata, inference, shared-memory,
# model-config, model-repository, statistics, trace, logging). These need the launcher's key:
# loading (which can run code from the request), unloading, the index, the model config (it holds
# the voices' speaker embeddings), shared-memory regions, trace and log settings. The rest stays
# open to the fleet's clients and the kubelet's probes.
ADMIN_APIS = ("model-repository", "model-config", "shared-memory", "trace", "logging")
# The HTTP header carrying the key; on gRPC Triton expects it as ``triton-grpc-protocol-<name>``.
ADMIN_KEY_HEADER = "ttsfleet-admin-key"
GRPC_ADMIN_KEY_HEADER = f"triton-grpc-protocol-{ADMIN_KEY_HEADER}"
REDACTED = "<redacted>"


class ServerError(RuntimeError):
    pass


def pytriton_root() -> Path:
    import pytriton

    return Path(pytriton.__file__).parent / "tritonserver"


def tritonserver_binary() -> Path:
    override = os.environ.get(ENV_TRITONSERVER)
    return Path(override) if override else pytriton_root() / "bin" / "tritonserver"


def _die_with_parent() -> None:
    """Linux: SIGTERM tritonserver when its launcher dies, so a killed test run leaves no server."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def packaged_model_file(kind: str = "chattts") -> Path:
    """The packaged ``model.py``: ``chattts`` (streaming) or ``chattts_unary`` (relay)."""
    return Path(str(resources.files("ttsfleet.worker") / "model_repository" / kind / "1" / "model.py"))


def assemble_model_repository(target: Path, config_pbtxt: str, serving: ServingConfig) -> Path:
    """``target/<model>/{config.pbtxt,1/model.py}`` for the streaming model and its unary relay.

    ``config_pbtxt`` is used verbatim for the streaming model: it is the file the operator
    rendered into the ConfigMap, so what Triton runs is what the spec says.
    """
    models = {
        serving.model_name: ("chattts", config_pbtxt),
        contract.unary_model_name(serving.model_name): (
            "chattts_unary",
            contract.render_unary_triton_config(serving),
        ),
    }
    for name, (kind, pbtxt) in models.items():
        version_dir = target / name / "1"
        version_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(packaged_model_file(kind), version_dir / "model.py")
        (target / name / contract.TRITON_CONFIG_FILE).write_text(pbtxt)
    return target


def assemble_backend_dir(target: Path) -> Path:
    """The wheel's python backend with the stub for this interpreter's version."""
    root = pytriton_root()
    python_dir = target / "python"
    if python_dir.exists():
        shutil.rmtree(python_dir)
    shutil.copytree(root / "backends" / "python", python_dir)
    stub = root / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}"
    shutil.copy2(stub / "triton_python_backend_stub", python_dir / "triton_python_backend_stub")
    return target


def server_environment(model_cache: Path, metrics_url: str, extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    libdirs = [
        str(sysconfig.get_config_var("LIBDIR")),
        str(pytriton_root().parent.parent / "nvidia_pytriton.libs"),
    ]
    if env.get("LD_LIBRARY_PATH"):
        libdirs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libdirs)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env[contract.ENV_MODEL_CACHE] = str(model_cache)
    env[contract.ENV_METRICS_URL] = metrics_url
    env.update(extra)
    return env


@dataclass
class ServerOptions:
    model_cache: Path
    workdir: Path
    serving: ServingConfig = field(default_factory=ServingConfig)
    config_pbtxt: str | None = None  # the operator's rendered file; rendered from ``serving`` if None
    host: str = "127.0.0.1"
    http_port: int = 0  # 0: pick a free port
    grpc_port: int = 0
    metrics_port: int = 0
    env: dict[str, str] = field(default_factory=dict)
    log_verbose: int = 0
    log_to_file: bool = True  # tests keep workdir/triton.log; pods log to stdout for the kubelet


class TritonServer:
    """One ``tritonserver`` process serving our repository; log kept in ``workdir/triton.log``."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        host = options.host
        self.http_port = options.http_port or free_port(host)
        self.grpc_port = options.grpc_port or free_port(host)
        self.metrics_port = options.metrics_port or free_port(host)
        client_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        self.http_url = f"http://{client_host}:{self.http_port}"
        self.grpc_url = f"{client_host}:{self.grpc_port}"
        self.metrics_url = f"http://{client_host}:{self.metrics_port}/metrics"
        self.log_path = options.workdir / "triton.log"
        self.process: subprocess.Popen[bytes] | None = None
        # Known to this launcher and the tritonserver it starts, nobody else (module docstring).
        self._admin_key = secrets.token_urlsafe(32)

    @property
    def model_name(self) -> str:
        return self.options.serving.model_name

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        options = self.options
        options.workdir.mkdir(parents=True, exist_ok=True)
        pbtxt = options.config_pbtxt or render_triton_config(options.serving)
        repository = assemble_model_repository(options.workdir / "models", pbtxt, options.serving)
        backends = assemble_backend_dir(options.workdir / "backends")
        command = [
            str(tritonserver_binary()),
            f"--model-repository={repository}",
            f"--backend-directory={backends}",
            "--model-control-mode=explicit",
            "--strict-readiness=true",
            f"--exit-timeout-secs={options.serving.drain_timeout_seconds}",
            f"--http-address={options.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={options.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={options.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=true",
            # Their frontends have been known to skip the restricted-API checks; we serve neither.
            "--allow-sagemaker=false",
            "--allow-vertex-ai=false",
            f"--http-restricted-api={self._restriction()}",
            f"--grpc-restricted-protocol={self._restriction()}",
            f"--log-verbose={options.log_verbose}",
        ]
        env = server_environment(options.model_cache, self.metrics_url, options.env)
        log.info(
            "starting tritonserver",
            extra={"http": self.http_url, "grpc": self.grpc_url, "restricted_apis": list(ADMIN_APIS)},
        )
        with contextlib.ExitStack() as stack:
            output = stack.enter_context(self.log_path.open("ab")) if options.log_to_file else None
            self.process = subprocess.Popen(
                command, env=env, stdout=output, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
            )

    def _get(self, path: str, timeout: float = 2.0) -> int:
        try:
            with urllib.request.urlopen(self.http_url + path, timeout=timeout) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)

    def probe(self, path: str) -> bool | None:
        """True/False from an endpoint; None when the server does not answer at all."""
        try:
            return self._get(path) == 200
        except OSError:
            return None

    def wait_for(self, path: str, timeout: float, interval: float = 0.05) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_running()
            if self.probe(path):
                return
            time.sleep(interval)
        raise ServerError(f"{path} was not OK after {timeout:.0f}s; tritonserver log: {self.log_path}")

    def check_running(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise ServerError(f"tritonserver exited with {self.process.returncode}; log: {self.log_path}")

    def _restriction(self) -> str:
        return f"{','.join(ADMIN_APIS)}:{ADMIN_KEY_HEADER}={self._admin_key}"

    def _redact(self, text: str) -> str:
        return text.replace(self._admin_key, REDACTED)

    def admin_headers(self, protocol: str = "http") -> dict[str, str]:
        """The key as Triton expects it on ``http`` or ``grpc``, for callers in this process only
        (the launcher's own requests, tests); never log it."""
        return {GRPC_ADMIN_KEY_HEADER if protocol == "grpc" else ADMIN_KEY_HEADER: self._admin_key}

    def _admin_post(self, path: str, timeout: float) -> bytes:
        """POST to an admin API with the launcher's key; HTTPError carries Triton's refusal."""
        request = urllib.request.Request(self.http_url + path, data=b"{}", method="POST", headers=self.admin_headers())
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return bytes(response.read())

    def _control(self, action: str, name: str, timeout: float) -> None:
        try:
            self._admin_post(f"/v2/repository/models/{name}/{action}", timeout)
        except urllib.error.HTTPError as error:
            message = self._redact(error.read().decode(errors="replace"))
            log.error(f"model {action} failed", extra={"model": name, "error": message})
            raise ServerError(f"{action}ing model {name} failed: {message}") from None

    def load_model(self, timeout: float) -> None:
        """Ask Triton to load (initialize + warm up) both models; blocks until they are loaded."""
        for name in (self.model_name, contract.unary_model_name(self.model_name)):
            self._control("load", name, timeout)

    def unload_model(self, name: str, timeout: float = 60.0) -> None:
        """Unload one model (only this launcher can: the repository API needs its key)."""
        self._control("unload", name, timeout)

    def model_states(self) -> dict[str, str]:
        """Triton's repository index: model name -> state (LOADING, READY, UNAVAILABLE...)."""
        return {
            entry["name"]: entry.get("state", "") for entry in json.loads(self._admin_post("/v2/repository/index", 5))
        }

    def start_loading(self) -> threading.Thread:
        """Load in the background; the outcome shows on the ready endpoints and in the log."""

        def load() -> None:
            with contextlib.suppress(ServerError, OSError):
                self.load_model(self.options.serving.warmup_timeout_seconds)

        thread = threading.Thread(target=load, daemon=True)
        thread.start()
        return thread

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM (Triton drains for up to its exit timeout), then SIGKILL if it hangs;
        a ``timeout`` of 0 (nothing left to drain) kills at once."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        if timeout == 0:
            self.process.kill()
            return self.process.wait()
        self.process.send_signal(signal.SIGTERM)
        grace = timeout if timeout is not None else self.options.serving.drain_timeout_seconds + 15
        try:
            return self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def _serving_from_mount(directory: Path) -> tuple[ServingConfig, str | None]:
    serving_json = directory / contract.SERVING_JSON_FILE
    pbtxt = directory / contract.TRITON_CONFIG_FILE
    serving = ServingConfig.from_json(serving_json.read_text()) if serving_json.exists() else ServingConfig()
    return serving, pbtxt.read_text() if pbtxt.exists() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ttsfleet-worker", description="Serve ChatTTS with tritonserver.")
    parser.add_argument(
        "--serving-config",
        type=Path,
        default=Path(contract.SERVING_CONFIG_MOUNT),
        help="directory holding config.pbtxt and serving.json (the operator's ConfigMap)",
    )
    parser.add_argument(
        "--model-cache",
        type=Path,
        default=Path(os.environ.get(contract.ENV_MODEL_CACHE, contract.MODEL_CACHE_MOUNT)),
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ttsfleet-worker"))
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (pods: all interfaces)")
    parser.add_argument("--http-port", type=int, default=contract.HTTP_PORT)
    parser.add_argument("--grpc-port", type=int, default=contract.GRPC_PORT)
    parser.add_argument("--metrics-port", type=int, default=contract.METRICS_PORT)
    parser.add_argument(
        "--termination-log",
        type=Path,
        default=supervisor.termination_log_path(),
        help="where a fatal reason is left for Kubernetes (its terminationMessagePath)",
    )
    args = parser.parse_args(argv)  # fmt: skip
    logs.configure_json()
    try:
        serving, pbtxt = _serving_from_mount(args.serving_config)
    except (ValueError, TypeError, OSError) as error:  # ContractError, bad JSON, unreadable mount
        return supervisor.fail(f"serving config in {args.serving_config} is unusable: {error}", args.termination_log)
    options = ServerOptions(
        model_cache=args.model_cache, workdir=args.workdir, serving=serving, config_pbtxt=pbtxt,
        host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
        metrics_port=args.metrics_port, log_to_file=False,
    )  # fmt: skip
    server = TritonServer(options)

    # Loads the model (or exits with the reason), then reloads it when ChatTTS turns unhealthy.
    watch = supervisor.Supervisor(server, serving, args.termination_log)

    def forward(signum: int, _frame: FrameType | None) -> None:
        # Triton stops taking new requests and lets open streams finish; the supervisor stops it
        # once nothing is open (idle client streams would hold it until its exit timeout).
        watch.stop()
        if server.process is not None and server.process.poll() is None:
            server.process.send_signal(signum)
            threading.Thread(target=watch.drain, name="ttsfleet-drain", daemon=True).start()

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    server.start()
    assert server.process is not None
    watch.start()
    return watch.exit_code(server.process.wait())


if __name__ == "__main__":
    sys.exit(main())
