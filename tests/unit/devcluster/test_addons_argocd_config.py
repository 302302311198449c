"""The Argo CD add-on's pure parts: arguments and environment of its processes, the local git
repository it reads, and the adapter that points the shipped example at that repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from argocd_gitops import APP_FILES, UPSTREAM_URL, localize, publish

from ttsfleet.devcluster import addons_argocd


def test_repo_server_listens_on_loopback_and_redis_password_goes_only_through_the_environment(tmp_path: Path) -> None:
    _, password = addons_argocd.write_redis_config(tmp_path / "redis", 6399)
    argv = addons_argocd.repo_server_argv(Path("argocd"), 1, 2, "127.0.0.1:6399")
    argv += addons_argocd.controller_argv(Path("argocd"), 1, 3, "127.0.0.1:6399")
    assert "--address=127.0.0.1" in argv and "--metrics-address=127.0.0.1" in argv
    env = addons_argocd.process_env({}, tmp_path / "argocd", password, "/bin")
    assert env["REDIS_PASSWORD"] == password
    assert not [a for a in argv if password in a]


def test_every_path_argo_cd_would_take_from_its_image_is_inside_the_cluster_directory(tmp_path: Path) -> None:
    env = addons_argocd.process_env({}, tmp_path, "pw", "/bin")
    for key in ("HOME", "TMPDIR", "ARGOCD_ASK_PASS_SOCK", "ARGOCD_TLS_DATA_PATH", "ARGOCD_SSH_DATA_PATH"):
        assert Path(env[key]).is_relative_to(tmp_path), key
    # The profiler switch is a path that is never written: pprof stays off.
    assert not Path(env["ARGOCD_ENABLE_PROFILER_FILE_PATH"]).exists()
    # Both processes read the reconciliation period from the same place, as upstream's manifests do.
    assert env["ARGOCD_RECONCILIATION_TIMEOUT"] == addons_argocd.base_objects()[1]["data"]["timeout.reconciliation"]


def test_git_repository_commits_what_its_work_tree_holds(tmp_path: Path) -> None:
    repo = addons_argocd.GitRepository.create(tmp_path / "repo")
    (repo.path / "a.yaml").write_text("a: 1\n")
    first = repo.commit("one")
    (repo.path / "a.yaml").write_text("a: 2\n")
    second = repo.commit("two")
    assert first != second
    assert repo.url == f"file://{tmp_path / 'repo'}"
    shown = subprocess.run(["git", "-C", str(repo.path), "show", "main:a.yaml"], capture_output=True, text=True)
    assert shown.stdout == "a: 2\n"


def test_publishing_the_example_changes_only_the_repository_url(tmp_path: Path) -> None:
    repo = addons_argocd.GitRepository.create(tmp_path / "repo")
    publish(repo)
    for app in APP_FILES:
        text = (repo.path / app).read_text()
        assert UPSTREAM_URL not in text and repo.url in text
    assert (repo.path / "charts/ttsfleet-operator/Chart.yaml").is_file()
    with pytest.raises(AssertionError, match="update the adapter"):
        localize("repoURL: https://example.invalid/other.git\n", repo.url)
