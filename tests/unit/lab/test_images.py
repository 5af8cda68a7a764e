"""The image cache's keys and checks (tests/lab/images.py): every input changes the key, a warm cache is reused."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.lab import images
from tests.lab.core import LabError


def recipe(**changes):
    base = images.Recipe(
        name="docker.io/hanzo-kms-lab/unit:1", fill=lambda root: None, inputs={"revision": 1}, entrypoint=("/bin/true",)
    )
    return dataclasses.replace(base, **changes)


def debian_recipe(**changes):
    return recipe(debian=images.Debian(packages=("redis-server",), **changes))


@pytest.fixture(name="cache")
def cache_fixture(tmp_path, monkeypatch):
    monkeypatch.setenv("HANZO_KMS_IMAGE_CACHE", str(tmp_path / "images"))
    return tmp_path / "images"


def test_key_is_stable_and_covers_every_input():
    assert recipe().key() == recipe().key()
    variants = [
        recipe(inputs={"revision": 2}),
        recipe(inputs={"revision": 1, "binary": "ab12"}),
        recipe(entrypoint=("/bin/false",)),
        recipe(cmd=("x",)),
        recipe(user="26"),
        recipe(env=("A=1",)),
        recipe(workdir="/srv"),
        recipe(name="docker.io/hanzo-kms-lab/unit:2"),
        debian_recipe(),
        debian_recipe(hooks=("true",)),
        debian_recipe(essential_hooks=("true",)),
        debian_recipe(suite="trixie"),
        recipe(debian=images.Debian(packages=("redis-tools",))),
    ]
    keys = {variant.key() for variant in variants} | {recipe().key()}
    assert len(keys) == len(variants) + 1


def test_archive_key_covers_the_installed_debian_versions():
    plain = recipe()
    assert images.archive_key(plain) == plain.key()
    deb = debian_recipe()
    one = images.archive_key(deb, {"redis-server": "5:7.0.15-1~deb12u5", "libc6": "2.36-9+deb12u10"})
    assert one == images.archive_key(deb, {"libc6": "2.36-9+deb12u10", "redis-server": "5:7.0.15-1~deb12u5"})
    assert one != images.archive_key(deb, {"redis-server": "5:7.0.15-1~deb12u6", "libc6": "2.36-9+deb12u10"})
    assert one != images.archive_key(deb, {"redis-server": "5:7.0.15-1~deb12u5"})


def test_file_digest_follows_the_content(tmp_path):
    path = tmp_path / "manager"
    path.write_bytes(b"one")
    first = images.file_digest(path)
    path.write_bytes(b"two")
    assert images.file_digest(path) != first


def test_stale_packages():
    recorded = {"a": "1", "b": "2", "c": "3"}
    assert not images.stale_packages(recorded, {"a": "1", "b": "2", "c": "3", "d": "9"})
    assert images.stale_packages(recorded, {"a": "1", "b": "2+deb12u1"}) == ["b", "c"]


def test_parse_apt_policy():
    text = (
        "redis-server:\n  Installed: (none)\n  Candidate: 5:7.0.15-1~deb12u5\n  Version table:\n"
        "     5:7.0.15-1~deb12u5 500\n        500 http://mirror bookworm-security/main amd64 Packages\n"
        "libc6:amd64:\n  Installed: (none)\n  Candidate: 2.36-9+deb12u10\n"
        "gone:\n  Installed: (none)\n  Candidate: (none)\n"
    )
    assert images.parse_apt_policy(text) == {"redis-server": "5:7.0.15-1~deb12u5", "libc6": "2.36-9+deb12u10"}


def test_requirement_pins_of_a_pip_compile_output():
    text = (
        "#\n#    pip-compile --generate-hashes\n#\nbarman==3.19.1 \\\n    --hash=sha256:00ff \\\n"
        "    # via -r sidecar-requirements.in\nPython_Dateutil==2.9.0.post0 \\\n    --hash=sha256:11\n"
        "typing-extensions==4.16.0 ; python_version < '3.12'\n"
    )
    assert images.requirement_pins(text) == {
        "barman": "3.19.1",
        "python-dateutil": "2.9.0.post0",
        "typing-extensions": "4.16.0",
    }


def test_operator_image_names_follow_the_rendered_manifests(tmp_path):
    manifest = tmp_path / "manifest.json"
    assert images.operator_image_names(manifest) == images.UPSTREAM_IMAGES
    manifest.write_text(
        json.dumps({"images": {"operator": "lab/cnpg:1", "plugin": "lab/barman:1", "sidecar": "lab/barman-sidecar:1"}}),
        encoding="utf-8",
    )
    assert images.operator_image_names(manifest) == {
        "operator": "lab/cnpg:1",
        "plugin": "lab/barman:1",
        "sidecar": "lab/barman-sidecar:1",
    }
    manifest.write_text(
        json.dumps(
            {
                "images": {
                    "cnpg-operator": "a/cloudnative-pg:1",
                    "barman-cloud-sidecar": "a/plugin-barman-cloud-sidecar:1",
                    "barman-cloud-plugin": "a/plugin-barman-cloud:1",
                }
            }
        ),
        encoding="utf-8",
    )
    assert images.operator_image_names(manifest) == {
        "operator": "a/cloudnative-pg:1",
        "plugin": "a/plugin-barman-cloud:1",
        "sidecar": "a/plugin-barman-cloud-sidecar:1",
    }


def test_missing_go_binary_names_make_k8s_bins(tmp_path, monkeypatch):
    monkeypatch.setenv("HANZO_KMS_K8S_CACHE", str(tmp_path))
    with pytest.raises(LabError, match=r"cnpg-manager is missing: build the lab's binaries with `make k8s-bins`"):
        images.operator_recipe()


def collection_tree(root):
    (root / "plugins/module_utils").mkdir(parents=True)
    (root / "plugins/module_utils/first.py").write_text("VALUE = 1\n", encoding="utf-8")
    (root / "plugins/module_utils/second.py").write_text(
        "from ansible_collections.hanzo.kms.plugins.module_utils.first import VALUE\n", encoding="utf-8"
    )
    (root / "requirements.txt").write_text(
        "kubernetes==1.0  # not the job's\nredis==7.8.9\nboto3==1.2.3\nanycrc==4.5\n", encoding="utf-8"
    )
    (root / "constraints.txt").write_text("boto3==1.2.3\nbotocore==1.9.9\nanycrc==4.5\n", encoding="utf-8")


def test_backup_tools_image_has_the_collections_module_utils_importable(tmp_path):
    collection_tree(tmp_path / "repo")
    files, inits = images.collection_files(tmp_path / "repo")
    package = "/usr/share/ansible/collections/ansible_collections/hanzo/kms/plugins/module_utils"
    assert [path for _source, path in files] == [f"{package}/first.py", f"{package}/second.py"]
    assert inits[0] == "/usr/share/ansible/collections/ansible_collections/__init__.py"
    assert inits[-1] == f"{package}/__init__.py" and len(inits) == 5
    # laid out as the image has it, Python imports the module through PYTHONPATH
    rootfs = tmp_path / "rootfs"
    for source, path in files:
        (rootfs / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, rootfs / path.lstrip("/"))
    for init in inits:
        (rootfs / init.lstrip("/")).touch()
    proc = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); "
            "from ansible_collections.hanzo.kms.plugins.module_utils import second; print(second.VALUE)",
            str(rootfs / "usr/share/ansible/collections"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.stdout.strip() == "1", proc.stderr
    requirements, pins = images.backup_job_pins(tmp_path / "repo")
    assert requirements == ("redis==7.8.9", "boto3==1.2.3", "anycrc==4.5") and pins["botocore"] == "1.9.9"


def test_backup_tools_image_key_follows_the_collections_code(tmp_path, monkeypatch):
    collection_tree(tmp_path)
    (tmp_path / "kubectl").write_bytes(b"kubectl")
    monkeypatch.setattr(images, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(images, "lab_binary", lambda name: tmp_path / name)
    before = images.backup_tools_recipe().key()
    assert images.backup_tools_recipe().key() == before
    (tmp_path / "plugins/module_utils/first.py").write_text("VALUE = 2\n", encoding="utf-8")
    changed = images.backup_tools_recipe().key()
    assert changed != before
    (tmp_path / "constraints.txt").write_text("botocore==1.9.10\n", encoding="utf-8")
    assert images.backup_tools_recipe().key() != changed


class FixedIndex:  # pylint: disable=too-few-public-methods
    """What the Debian archive offers, fixed by the test."""

    def __init__(self, versions):
        self.versions = versions

    def candidates(self, sources, packages):
        assert sources == "deb lab bookworm main\n"
        return {name: self.versions[name] for name in packages if name in self.versions}


def test_debian_image_is_reused_until_debian_offers_another_version(cache):
    deb = debian_recipe()
    installed = {"redis-server": "5:7.0.15-1~deb12u5", "libc6": "2.36-9+deb12u10"}
    cache.mkdir(parents=True)
    images.archive_path(deb, installed).write_bytes(b"layout")
    (cache / f"{deb.slug()}-{deb.key()}.debian.json").write_text(
        json.dumps({"packages": installed, "sources": "deb lab bookworm main\n"}), encoding="utf-8"
    )
    assert images.cached_archive(deb, index=FixedIndex(installed)) == images.archive_path(deb, installed)
    messages = []
    newer = dict(installed, libc6="2.36-9+deb12u11")
    assert images.cached_archive(deb, log=messages.append, index=FixedIndex(newer)) is None
    assert "libc6" in messages[0] and "rebuilding" in messages[0]
    assert images.cached_archive(debian_recipe(hooks=("true",)), index=FixedIndex(installed)) is None


@pytest.mark.skipif(not shutil.which("umoci"), reason="umoci (make setup) packs the images")
def test_warm_cache_is_reused_and_a_changed_input_rebuilds(cache, tmp_path):
    payload = tmp_path / "payload"
    payload.write_text("one", encoding="ascii")

    def make():
        return recipe(
            inputs={"payload": images.file_digest(payload)},
            fill=lambda root: shutil.copyfile(payload, root / "payload"),
        )

    first, built = images.ensure_built(make(), log=lambda msg: None)
    assert built and first.parent == cache
    again, built = images.ensure_built(make(), log=lambda msg: None)
    assert (again, built) == (first, False)
    payload.write_text("two", encoding="ascii")
    changed, built = images.ensure_built(make(), log=lambda msg: None)
    assert built and changed != first
    payload.write_text("three", encoding="ascii")
    third, built = images.ensure_built(make(), log=lambda msg: None)
    assert built and {p.name for p in cache.glob("*.tar")} == {changed.name, third.name}  # the oldest pruned


def test_scratch_of_a_killed_build_is_removed(cache):
    dead = cache / "image-999999999-postgresql-15-bookworm-x" / "bundle"
    live = cache / f"image-{os.getpid()}-redis-7.0-bookworm-y"
    dead.mkdir(parents=True)
    live.mkdir()
    images.remove_stale_scratch()
    assert not dead.parent.exists() and live.is_dir()
