"""Image layers are keyed by exactly their inputs, and the archive is one ctr can import."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from ttsfleet.devcluster import images, ocitar


def test_a_source_change_rebuilds_only_the_project_layer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_repo = tmp_path / "repo"
    for top in ("src/ttsfleet", "operator", "worker", "devcluster"):
        (fake_repo / top).mkdir(parents=True)
    (fake_repo / "pyproject.toml").write_text((images.REPO_ROOT / "pyproject.toml").read_text())
    (fake_repo / "README.md").write_text("readme")
    module = fake_repo / "operator" / "handlers.py"
    module.write_text("A = 1\n")
    monkeypatch.setattr(images, "REPO_ROOT", fake_repo)

    before = [layer.key for layer in images.operator_image().layers[1:]]
    module.write_text("A = 2\n")
    after = [layer.key for layer in images.operator_image().layers[1:]]

    deps_before, bytecode_before, project_before = before
    deps_after, bytecode_after, project_after = after
    assert deps_before == deps_after, "the dependency layer must not depend on the project's code"
    assert bytecode_before == bytecode_after, "nor must its bytecode"
    assert project_before != project_after


def test_bytecode_compiled_for_the_image_is_what_its_python_imports(tmp_path: Path) -> None:
    """The layer's pycs sit where the image's interpreter looks for them and are used without a
    look at the source (unchecked hash: the image never changes under them)."""
    source = tmp_path / "host" / "pkg" / "mod.py"
    source.parent.mkdir(parents=True)
    source.write_text("ANSWER = 'compiled'\n")
    site = tmp_path / "image-site"
    assert images._compile_one((str(source), "pkg/mod.py", str(site))) == 1
    pyc = site / "pkg" / "__pycache__" / f"mod.{sys.implementation.cache_tag}.pyc"
    assert pyc.is_file()
    (site / "pkg" / "mod.py").write_text("ANSWER = 'source'\n")  # the image's copy of the source
    found = subprocess.run(
        [sys.executable, "-B", "-c", "import pkg.mod; print(pkg.mod.ANSWER, pkg.mod.__file__)"],
        cwd=site, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert found == ["compiled", str(site / "pkg" / "mod.py")]
    broken = tmp_path / "host" / "pkg" / "template.py"
    broken.write_text("def {{ name }}():\n")
    assert images._compile_one((str(broken), "pkg/template.py", str(site))) == 0


def test_the_dependency_layer_follows_the_extras_pins() -> None:
    operator_deps = images.python_deps_layer("operator")
    worker_deps = images.python_deps_layer("worker")

    assert operator_deps.key != worker_deps.key
    assert "kopf==1.45.2" in images.requirements("operator")
    assert not any(req.startswith("torch") for req in images.requirements("operator"))


def test_image_tag_changes_with_any_layer_and_refs_are_local() -> None:
    image = images.pause_image()
    changed = images.Image("pause", image.layers, ocitar.ImageConfig(entrypoint=["/other"]))

    assert image.ref.startswith("localhost/ttsfleet-pause:")
    assert image.tag != changed.tag


def _layer(tmp_path: Path) -> ocitar.LayerFile:
    layer_path = tmp_path / "layer.tar"
    with tarfile.open(layer_path, "w") as layer:
        data = b"#!/bin/sh\n"
        info = tarfile.TarInfo("bin/hello")
        info.size = len(data)
        layer.addfile(info, io.BytesIO(data))
    return ocitar.LayerFile(layer_path, ocitar.sha256_file(layer_path))


def _read(archive_bytes: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive_bytes)) as archive:
        return {m.name: archive.extractfile(m).read() for m in archive.getmembers()}  # type: ignore[union-attr]


def test_archive_index_manifest_config_and_layers_agree(tmp_path: Path) -> None:
    layer = _layer(tmp_path)
    out = io.BytesIO()

    image_id = ocitar.write_archive(
        out, "localhost/x:1", ocitar.ImageConfig(entrypoint=["/bin/hello"], user="1000:1000"), [layer]
    )

    files = _read(out.getvalue())
    index = json.loads(files["index.json"])
    entry = index["manifests"][0]
    manifest_bytes = files[f"blobs/sha256/{entry['digest'].removeprefix('sha256:')}"]
    manifest = json.loads(manifest_bytes)
    config_bytes = files[f"blobs/sha256/{image_id}"]
    config = json.loads(config_bytes)
    stored_layer = files[f"blobs/sha256/{layer.digest}"]
    assert entry["annotations"]["io.containerd.image.name"] == "localhost/x:1"
    assert hashlib.sha256(manifest_bytes).hexdigest() == entry["digest"].removeprefix("sha256:")
    assert manifest["config"]["digest"] == f"sha256:{hashlib.sha256(config_bytes).hexdigest()}"
    assert manifest["layers"][0]["digest"] == f"sha256:{hashlib.sha256(stored_layer).hexdigest()}"
    assert config["rootfs"]["diff_ids"] == [manifest["layers"][0]["digest"]]
    assert config["config"]["User"] == "1000:1000"
    assert config["config"]["Entrypoint"] == ["/bin/hello"]


def test_layers_the_reader_already_has_are_left_out_but_still_referenced(tmp_path: Path) -> None:
    layer = _layer(tmp_path)
    out = io.BytesIO()

    ocitar.write_archive(
        out, "localhost/x:1", ocitar.ImageConfig(entrypoint=["/x"]), [layer], skip=frozenset({f"sha256:{layer.digest}"})
    )

    files = _read(out.getvalue())
    assert f"blobs/sha256/{layer.digest}" not in files
    index = json.loads(files["index.json"])
    manifest = json.loads(files[f"blobs/sha256/{index['manifests'][0]['digest'].removeprefix('sha256:')}"])
    assert manifest["layers"][0]["digest"] == f"sha256:{layer.digest}"


def test_project_layer_keeps_the_base_directories_modes_and_gives_writable_paths_to_the_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTSFLEET_CACHE", str(tmp_path))
    layer = images.project_layer("worker", 65532, {"ttsfleet-worker": "ttsfleet.worker.server:main"}, ("/tmp/w",))
    images.layers_dir().mkdir(parents=True)
    out = tmp_path / "layer.tar"

    layer.build(out)

    with tarfile.open(out) as archive:
        members = {member.name: member for member in archive.getmembers()}
    # An entry for /tmp (or /var, /opt) would replace the base's, sticky bit and all.
    assert not {"tmp", "opt", "var", "etc"} & set(members)
    assert members["tmp/w"].uid == 65532
    assert members["opt/venv/bin/ttsfleet-worker"].uid == 0
    assert "opt/venv/lib/python3.11/site-packages/ttsfleet/worker/server.py" in members
