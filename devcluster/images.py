"""Container images for the real node, built offline and cached by their inputs.

An image is a stack of layers; each layer is built once into ``<cache>/images/layers/<key>.tar``
where ``key`` hashes exactly what goes into it, so editing the project's code rebuilds only the
small project layer and never the Debian base or the Python dependencies. The image tag hashes
the layer keys and the image config. Importing streams an OCI layout (``ocitar``) straight into
``ctr images import``, leaving out the layers containerd already holds; nothing is ever pulled
from a registry.

- ``pause``: the CRI sandbox, ``pause.c`` from the Kubernetes module compiled ``gcc -static``.
- ``operator``: Debian minbase + python3, the ``operator`` extra, the project.
- ``worker``: the same base with Triton's runtime libraries, the ``worker`` extra (torch,
  nvidia-pytriton's tritonserver, ChatTTS), the project; entry points, user and paths as
  ``worker/Dockerfile``.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import importlib.util
import json
import logging
import os
import py_compile
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ttsfleet import contract
from ttsfleet.cache import cache_root
from ttsfleet.devcluster import ocitar, upstream, versions

log = logging.getLogger("ttsfleet.devcluster.images")

REPO_ROOT = Path(__file__).resolve().parent.parent
REGISTRY = "localhost"
DEBIAN_SUITE = "bookworm"
PYTHON_VERSION = "3.11"  # bookworm's python3; the venv's wheels must match it
VENV = "/opt/venv"
SITE_PACKAGES = f"{VENV}/lib/python{PYTHON_VERSION}/site-packages"
# Bumped when a recipe below changes in a way its inputs do not show.
RECIPE_VERSION = "1"

OPERATOR_UID = 65532  # the chart's podSecurityContext
WORKER_UID = contract.WORKER_UID  # worker/Dockerfile's USER, the StatefulSet's runAsUser


@dataclass(frozen=True)
class Layer:
    name: str
    key_inputs: tuple[str, ...]
    build: Callable[[Path], None]  # writes the layer tarball to the given path
    # Seconds to build (the project, pause): `up` builds such layers itself when missing.
    cheap: bool = False

    @property
    def key(self) -> str:
        digest = hashlib.sha256("\0".join((RECIPE_VERSION, self.name, *self.key_inputs)).encode())
        return f"{self.name}-{digest.hexdigest()[:16]}"


@dataclass(frozen=True)
class Image:
    name: str
    layers: tuple[Layer, ...]
    config: ocitar.ImageConfig

    @property
    def tag(self) -> str:
        document = json.dumps([[layer.key for layer in self.layers], repr(self.config)])
        return hashlib.sha256(document.encode()).hexdigest()[:12]

    @property
    def ref(self) -> str:
        return f"{REGISTRY}/ttsfleet-{self.name}:{self.tag}"


@dataclass
class BuildReport:
    ref: str
    seconds: float
    size_bytes: int
    built_layers: list[str] = field(default_factory=list)


def layers_dir() -> Path:
    return cache_root() / "images" / "layers"


# -- layer recipes ----------------------------------------------------------------------------


def _sha_text(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _tool_version(*command: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True)
    return (result.stdout + result.stderr).strip().splitlines()[0] if result.returncode == 0 else "absent"


def pause_source() -> Path:
    return upstream.module_dir("k8s.io/kubernetes", versions.KUBERNETES) / "build" / "pause" / "linux" / "pause.c"


def pause_layer() -> Layer:
    source = pause_source()

    def build(out: Path) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            binary = Path(tmp) / "pause"
            subprocess.run(
                ["gcc", "-Os", "-static", "-o", str(binary), str(source)], check=True, capture_output=True, text=True
            )
            subprocess.run(["strip", str(binary)], check=True)
            with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as archive:
                archive.add(binary, "pause", filter=_root_owned)

    return Layer("pause", (source.read_text(), _tool_version("gcc", "--version")), build, cheap=True)


def debian_layer(packages: tuple[str, ...]) -> Layer:
    """A Debian minbase root filesystem from the distribution's mirror (mmdebstrap's tarball is the layer)."""

    def build(out: Path) -> None:
        command = [
            "mmdebstrap",
            "--variant=minbase",
            "--quiet",
            f"--include={','.join(packages)}",
            # No documentation, no caches: they only make the image bigger.
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--customize-hook=rm -rf $1/var/cache/apt/* $1/var/lib/apt/lists/*",
            DEBIAN_SUITE,
            str(out),
        ]
        _run_logged(command, "mmdebstrap")

    return Layer("debian", (DEBIAN_SUITE, *sorted(packages), _tool_version("mmdebstrap", "--version")), build)


def requirements(extra: str) -> list[str]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return sorted([*project["dependencies"], *project["optional-dependencies"][extra]])


def dependency_closure(extra: str) -> list[metadata.Distribution]:
    """The installed distributions the extra needs (transitively), as ``make`` installed them."""
    wanted: list[tuple[Requirement, frozenset[str]]] = [(Requirement(r), frozenset()) for r in requirements(extra)]
    found: dict[str, metadata.Distribution] = {}
    extras_of: dict[str, set[str]] = {}
    while wanted:
        requirement, _ = wanted.pop()
        name = canonicalize_name(requirement.name)
        new_extras = set(requirement.extras) - extras_of.get(name, set())
        if name in found and not new_extras:
            continue
        try:
            dist = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError as error:
            raise RuntimeError(
                f"{requirement.name} (needed by the {extra} image) is not installed here; run `make` first"
            ) from error
        found[name] = dist
        extras_of.setdefault(name, set()).update(requirement.extras)
        for line in dist.requires or []:
            child = Requirement(line)
            environments = [{"extra": extra_name} for extra_name in (*extras_of[name], "")]
            if child.marker is None or any(child.marker.evaluate(env) for env in environments):
                wanted.append((child, frozenset()))
    found.pop(canonicalize_name("ttsfleet"), None)
    return sorted(found.values(), key=lambda dist: canonicalize_name(dist.metadata["Name"]))


def _pins(closure: list[metadata.Distribution]) -> list[str]:
    return [f"{canonicalize_name(dist.metadata['Name'])}=={dist.version}" for dist in closure]


def python_deps_layer(extra: str) -> Layer:
    """The extra's third-party packages in the image's venv, copied from this machine's venv
    (Python 3.11 like the image's): the exact versions ``make`` installed, nothing downloaded.
    Keyed by those name==version pins only, never by the project's code."""
    closure = dependency_closure(extra)
    pins = _pins(closure)

    def build(out: Path) -> None:
        site = SITE_PACKAGES.lstrip("/")
        seen: set[str] = set()
        with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as archive:
            for directory in _parents(site):
                archive.add(Path("/"), directory, recursive=False, filter=_directory_entry)
            for dist in closure:
                for record in dist.files or []:
                    relative = str(record)
                    # Console scripts (../../../bin) point at this machine's interpreter.
                    if relative.startswith("..") or relative in seen:
                        continue
                    source = Path(str(dist.locate_file(record)))
                    if not source.exists():
                        continue
                    for parent in _parents(relative)[:-1]:
                        if parent not in seen:
                            seen.add(parent)
                            archive.add(source.parent, f"{site}/{parent}", recursive=False, filter=_directory_entry)
                    seen.add(relative)
                    archive.add(source, f"{site}/{relative}", recursive=False, filter=_root_owned)

    return Layer(f"py-{extra}", (PYTHON_VERSION, *pins), build)


def python_bytecode_layer(extra: str) -> Layer:
    """The byte-compiled modules of :func:`python_deps_layer`'s packages, as ``worker/Dockerfile``
    has them (``UV_COMPILE_BYTECODE``): the venv ``make`` builds has none (uv compiles nothing by
    default), and the pods' root filesystem is read-only, so without them every process of every
    pod start compiled torch, transformers and ChatTTS again (seconds of CPU each). Unchecked hash
    pycs: the image never changes under them. A layer of its own, so the large one stays as it is."""
    closure = dependency_closure(extra)
    pins = _pins(closure)
    sources = [
        (Path(str(dist.locate_file(record))), str(record))
        for dist in closure
        for record in dist.files or []
        if str(record).endswith(".py") and not str(record).startswith("..")
    ]

    def build(out: Path) -> None:
        site = SITE_PACKAGES.lstrip("/")
        with tempfile.TemporaryDirectory(dir=layers_dir()) as tmp:
            root = Path(tmp)
            jobs = [(str(source), relative, str(root / site)) for source, relative in sources if source.exists()]
            with concurrent.futures.ProcessPoolExecutor() as pool:
                compiled = sum(pool.map(_compile_one, jobs, chunksize=256))
            log.info("byte-compiled %d of %d modules of the %s packages", compiled, len(jobs), extra)
            with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as archive:
                archive.add(root / site, site, filter=_read_only_entry)

    return Layer(f"pyc-{extra}", (PYTHON_VERSION, importlib.util.MAGIC_NUMBER.hex(), *pins), build)


def _compile_one(job: tuple[str, str, str]) -> int:
    """Compile one module into ``<site>/<dir>/__pycache__/``; 1 if it compiled (a template or a
    Python 2 file in a package does not: the image's Python would not import it either)."""
    source, relative, site = job
    target = Path(importlib.util.cache_from_source(str(Path(site) / relative)))
    try:
        py_compile.compile(
            source,
            cfile=str(target),
            dfile=f"{SITE_PACKAGES}/{relative}",
            doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )
    except (py_compile.PyCompileError, SyntaxError, ValueError, OSError):
        return 0
    return 1


def _read_only_entry(info: tarfile.TarInfo) -> tarfile.TarInfo:
    _root_owned(info)
    info.mode = 0o755 if info.isdir() else 0o644
    return info


def _parents(relative: str) -> list[str]:
    """``a/b/c`` -> ``["a", "a/b", "a/b/c"]``."""
    parts = relative.split("/")
    return ["/".join(parts[: index + 1]) for index in range(len(parts))]


def _directory_entry(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info = _root_owned(info)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info


def _source_files() -> list[Path]:
    files = [REPO_ROOT / "pyproject.toml", REPO_ROOT / "README.md"]
    for top in ("src/ttsfleet", "operator", "worker", "devcluster"):
        for path in sorted((REPO_ROOT / top).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and not path.name.endswith(".pyc"):
                files.append(path)
    return files


def project_layer(extra: str, uid: int, scripts: dict[str, str], writable: tuple[str, ...]) -> Layer:
    """The project itself (this checkout's ``ttsfleet`` package), the venv around it and its entry points."""
    digest = hashlib.sha256()
    for path in _source_files():
        digest.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0" + path.read_bytes())
    source_key = digest.hexdigest()

    def build(out: Path) -> None:
        with tempfile.TemporaryDirectory(dir=layers_dir()) as tmp:
            root = Path(tmp) / "root"
            site = root / SITE_PACKAGES.lstrip("/")
            _install_project(site)
            venv = root / VENV.lstrip("/")
            (venv / "bin").mkdir(parents=True, exist_ok=True)
            (venv / "pyvenv.cfg").write_text(
                f"home = /usr/bin\ninclude-system-site-packages = false\nversion = {PYTHON_VERSION}\n"
            )
            for name in ("python", "python3", f"python{PYTHON_VERSION}"):
                (venv / "bin" / name).symlink_to(f"/usr/bin/python{PYTHON_VERSION}")
            for script, target in scripts.items():
                module, function = target.split(":")
                path = venv / "bin" / script
                path.write_text(
                    f"#!{VENV}/bin/python\nimport sys\nfrom {module} import {function}\nsys.exit({function}())\n"
                )
                path.chmod(0o755)
            for directory in writable:
                (root / directory.lstrip("/")).mkdir(parents=True, exist_ok=True)
            _tar_tree(
                root,
                out,
                roots=(VENV.lstrip("/"), *(directory.lstrip("/") for directory in writable)),
                owned_by={directory.lstrip("/"): uid for directory in writable},
            )

    return Layer(f"project-{extra}", (source_key, str(uid), json.dumps(scripts), *writable), build, cheap=True)


def _install_project(site: Path) -> None:
    """What installing the project's wheel would put in site-packages, in a second: the package
    tree (its symlinked subpackages resolved, data files included), byte-compiled because the
    root filesystem is read-only, and a dist-info so importlib.metadata finds it. Building a real
    wheel needs setuptools in an isolated environment: tens of seconds on every code change."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    shutil.copytree(
        REPO_ROOT / "src" / "ttsfleet", site / "ttsfleet", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    dist_info = site / f"ttsfleet-{project['version']}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: ttsfleet\nVersion: {project['version']}\n"
        f"Requires-Python: {project['requires-python']}\n"
    )
    scripts = "".join(f"{name} = {target}\n" for name, target in sorted(project["scripts"].items()))
    (dist_info / "entry_points.txt").write_text(f"[console_scripts]\n{scripts}")
    (dist_info / "INSTALLER").write_text("ttsfleet-cluster images\n")
    (dist_info / "RECORD").write_text("")
    _run_logged([sys.executable, "-m", "compileall", "-q", str(site / "ttsfleet")], "byte-compile ttsfleet")


# -- images -----------------------------------------------------------------------------------


def pause_image() -> Image:
    return Image("pause", (pause_layer(),), ocitar.ImageConfig(entrypoint=["/pause"], user="65535:65535"))


def _scripts(*names: str) -> dict[str, str]:
    scripts: dict[str, str] = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    return {name: scripts[name] for name in names}


# One Debian base for both Python images (containerd stores a shared layer once): python3, and
# what tritonserver and its python backend stub (from the nvidia-pytriton wheel) link against
# beyond the libraries the wheel bundles (found with ldd).
BASE_PACKAGES = (
    "python3",
    "ca-certificates",
    "libpython3.11",
    "libexpat1",
    "libstdc++6",
    "zlib1g",
    "libgomp1",
)


def operator_image() -> Image:
    return Image(
        "operator",
        (
            debian_layer(BASE_PACKAGES),
            python_deps_layer("operator"),
            python_bytecode_layer("operator"),
            project_layer("operator", OPERATOR_UID, _scripts("ttsfleet-operator"), ()),
        ),
        ocitar.ImageConfig(
            entrypoint=[f"{VENV}/bin/ttsfleet-operator"],
            user=f"{OPERATOR_UID}:{OPERATOR_UID}",
            env=[f"PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/tmp"],
            working_dir="/tmp",
        ),
    )


def worker_image() -> Image:
    """The CPU worker: same entry points, user and paths as worker/Dockerfile."""
    return Image(
        "worker",
        (
            debian_layer(BASE_PACKAGES),
            python_deps_layer("worker"),
            python_bytecode_layer("worker"),
            project_layer(
                "worker",
                WORKER_UID,
                _scripts("ttsfleet-worker", "ttsfleet-fetch", "ttsfleet-say", "ttsfleet-make-weights"),
                ("/var/cache/ttsfleet", "/etc/ttsfleet/serving", "/tmp/ttsfleet-worker"),
            ),
        ),
        ocitar.ImageConfig(
            entrypoint=["ttsfleet-worker"],
            cmd=[
                "--serving-config",
                "/etc/ttsfleet/serving",
                "--model-cache",
                "/var/cache/ttsfleet",
                "--host",
                "0.0.0.0",
            ],
            user=f"{WORKER_UID}:{WORKER_UID}",
            env=[
                f"PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                f"TTSFLEET_TRITONSERVER={SITE_PACKAGES}/pytriton/tritonserver/bin/tritonserver",
                "TTSFLEET_MODEL_CACHE=/var/cache/ttsfleet",
                "HF_HOME=/var/cache/ttsfleet/.hf",
                "HOME=/tmp/ttsfleet-worker",
                # Dockerfile: torch needs getpass.getuser(), and the worker's UID has no account.
                "USER=ttsfleet",
            ],
            working_dir="/tmp/ttsfleet-worker",
            exposed_ports=(8000, 8001, 8002),
        ),
    )


IMAGES: dict[str, Callable[[], Image]] = {"pause": pause_image, "operator": operator_image, "worker": worker_image}
# What `ttsfleet-cluster images` (and so `make test`) builds and `up` imports.
DEFAULT_IMAGES = ("pause", "operator", "worker")


def buildable_now(image: Image) -> bool:
    """Whether only cheap layers are missing (after a code change, say): then `up` builds them."""
    return all(layer.cheap or _complete(layer) for layer in image.layers)


def _complete(layer: Layer) -> bool:
    path = layer_file(layer)
    return path.exists() and path.with_suffix(".sha256").exists()


def layer_file(layer: Layer) -> Path:
    return layers_dir() / f"{layer.key}.tar"


def ensure_layer(layer: Layer) -> tuple[ocitar.LayerFile, bool]:
    """The layer's tarball, built when absent; True when it was built now."""
    path = layer_file(layer)
    digest_path = path.with_suffix(".sha256")
    if _complete(layer):
        return ocitar.LayerFile(path, digest_path.read_text().strip()), False
    layers_dir().mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    log.info("building layer %s (first time only)", layer.key)
    # Per process (two test sessions may build the same layer at once), and a .tar name:
    # mmdebstrap picks its output format from the extension.
    partial = layers_dir() / f".{layer.key}.{os.getpid()}.partial.tar"
    partial.unlink(missing_ok=True)
    try:
        layer.build(partial)
        digest = ocitar.sha256_file(partial)
        digest_partial = partial.with_suffix(".sha256")
        digest_partial.write_text(digest)
        digest_partial.rename(digest_path)
        # The tarball last: a killed build never leaves a layer that looks complete.
        partial.rename(path)
    finally:
        partial.unlink(missing_ok=True)
    if layer.cheap:
        _prune(layer.name)
    log.info("built layer %s in %.0fs (%.0f MB)", layer.key, time.monotonic() - started, path.stat().st_size / 1e6)
    return ocitar.LayerFile(path, digest), True


def _prune(name: str, keep: int = 5) -> None:
    """Each code change makes a new project layer; keep the newest few (other sessions may be
    importing a recent one), not one per edit forever."""
    tarballs = sorted(layers_dir().glob(f"{name}-*.tar"), key=lambda path: path.stat().st_mtime, reverse=True)
    for old in tarballs[keep:]:
        old.with_suffix(".sha256").unlink(missing_ok=True)
        old.unlink(missing_ok=True)


def build(image: Image) -> BuildReport:
    started = time.monotonic()
    built = []
    size = 0
    for index, layer in enumerate(image.layers, 1):
        log.info("image %s: layer %d/%d %s", image.name, index, len(image.layers), layer.name)
        layer_file_, fresh = ensure_layer(layer)
        size += layer_file_.path.stat().st_size
        if fresh:
            built.append(layer.key)
    return BuildReport(image.ref, time.monotonic() - started, size, built)


def layer_files(image: Image) -> list[ocitar.LayerFile]:
    files = []
    for layer in image.layers:
        path = layer_file(layer)
        files.append(ocitar.LayerFile(path, path.with_suffix(".sha256").read_text().strip()))
    return files


def import_image(image: Image, ctr: Path, address: Path) -> float:
    """Stream the image into containerd's k8s.io namespace; seconds taken (0 when already there)."""
    base = [str(ctr), "--address", str(address), "--namespace", "k8s.io"]
    listed = subprocess.run([*base, "images", "ls", "-q"], capture_output=True, text=True, check=True).stdout
    if image.ref in listed.split():
        return 0.0
    started = time.monotonic()
    present = subprocess.run([*base, "content", "ls", "-q"], capture_output=True, text=True, check=True).stdout
    # ctr's output goes to a file: a pipe nobody reads while we write could fill and stall both.
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(
            [*base, "images", "import", "--local", "-"], stdin=subprocess.PIPE, stdout=output, stderr=output
        )
        assert process.stdin is not None
        try:
            ocitar.write_archive(
                process.stdin, image.ref, image.config, layer_files(image), skip=frozenset(present.split())
            )
        finally:
            process.stdin.close()
        if process.wait() != 0:
            output.seek(0)
            raise RuntimeError(f"ctr images import {image.ref} failed: {output.read().decode(errors='replace')}")
    return time.monotonic() - started


def build_all(names: tuple[str, ...]) -> list[BuildReport]:
    return [build(IMAGES[name]()) for name in names]


# -- helpers ----------------------------------------------------------------------------------


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _tar_tree(root: Path, out: Path, roots: tuple[str, ...], owned_by: dict[str, int] | None = None) -> None:
    """Tar ``roots`` (paths under ``root``, relative to /) as an image layer, owned by root unless
    listed. Their parents (/tmp, /var, /opt, ...) are left out: the base layer's stay, with
    their modes (an entry for /tmp here would take away its sticky, world-writable bit)."""
    owners = owned_by or {}

    def owner(info: tarfile.TarInfo) -> tarfile.TarInfo:
        _root_owned(info)
        for prefix, uid in owners.items():
            if info.name == prefix or info.name.startswith(prefix + "/"):
                info.uid = info.gid = uid
                info.uname = info.gname = ""
        return info

    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as archive:
        for relative in sorted(roots):
            archive.add(root / relative, relative, filter=owner)


def _run_logged(command: list[str], what: str) -> None:
    started = time.monotonic()
    env = dict(os.environ)
    env.setdefault("PIP_PROGRESS_BAR", "off")
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise RuntimeError(f"{what} failed (exit {result.returncode}):\n{tail}")
    log.info("%s done in %.0fs", what, time.monotonic() - started)
