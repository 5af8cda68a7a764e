"""requirements.txt is enough: a fresh venv with it alone (no ansible-core, no test libraries) runs one module of each
kind against the lab's real servers — object storage, Redis, Kubernetes and HAProxy — as the host that runs the
modules (the control node or an execution environment). AnsiballZ brings the ansible-core parts a module needs;
everything else must come from requirements.txt."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests import ansible_run
from tests.lab.kube_fixtures import kube_sites  # noqa: F401  pylint: disable=unused-import

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def requirements_venv(tmp_path_factory):
    """A venv with requirements.txt alone, pinned by constraints.txt (pip's cache keeps a warm run short)."""
    path = tmp_path_factory.mktemp("requirements") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)
    proc = subprocess.run(
        [
            str(path / "bin" / "pip"),
            "install",
            "-q",
            "--disable-pip-version-check",
            "-r",
            str(REPO_ROOT / "requirements.txt"),
            "-c",
            str(REPO_ROOT / "constraints.txt"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return path / "bin" / "python"


def missing_modules(python, names):
    code = (
        "import importlib.util, json, sys\n"
        "print(json.dumps([n for n in sys.argv[1:] if importlib.util.find_spec(n) is None]))"
    )
    return json.loads(
        subprocess.run([str(python), "-c", code, *names], capture_output=True, text=True, check=True, timeout=60).stdout
    )


def test_the_venv_has_requirements_txt_and_nothing_of_ansible_or_the_lab(requirements_venv):
    assert (
        missing_modules(
            requirements_venv, ["redis", "boto3", "botocore", "kubernetes", "urllib3", "anycrc", "psycopg2"]
        )
        == []
    )
    assert missing_modules(requirements_venv, ["ansible", "pytest"]) == ["ansible", "pytest"]


def test_one_module_of_each_kind_runs_on_requirements_txt_alone(  # noqa: F811  pylint: disable=redefined-outer-name
    requirements_venv, lab, kube_sites, tmp_path
):
    s3, redis, lb = lab["s3"], lab["sites"]["dc1"]["redis"], lab["lb"]
    lock_site = {
        "name": "dc1",
        "namespace": "default",
        "kubeconfig": kube_sites["dc1"]["kubeconfig"],
        "context": kube_sites["dc1"]["context"],
    }
    tasks = [
        {
            "name": "object storage",
            "check_mode": True,
            "hanzo.kms.s3_retention": {
                "endpoint_url": s3["endpoint_url"],
                "region": s3["region"],
                "access_key": s3["access_key"],
                "secret_key": s3["secret_key"],
                "ca_bundle": s3["ca_file"],
                "addressing_style": "path",
                "bucket": s3["bucket"],
                "prefix": "requirements-check",
                "keep_last": -1,
            },
        },
        {
            "name": "redis",
            "hanzo.kms.redis_rdb_backup": {
                "host": redis["host"],
                "port": redis["port"],
                "password": redis["password"],
                "tls": bool(redis.get("ca_file")),
                "tls_ca_cert": redis.get("ca_file"),
                "dest": str(tmp_path / "dump.rdb"),
            },
        },
        {
            "name": "kubernetes",
            "register": "lock",
            "hanzo.kms.operation_lock": {"operation": "requirements-check", "sites": [lock_site]},
        },
        {
            "name": "kubernetes, release",
            "hanzo.kms.operation_lock": {"state": "released", "owner": "{{ lock.owner }}", "sites": [lock_site]},
        },
        {
            "name": "haproxy",
            "hanzo.kms.haproxy_info": {
                "backend": lb["backend"],
                "instances": [{"socket": inst["socket"]} for inst in lb["instances"]],
            },
        },
    ]
    # the later -e wins over run_play's interpreter (the tests' Python)
    run = ansible_run.run_play(
        tmp_path / "each_kind.yml", tasks, "-e", f"ansible_python_interpreter={requirements_venv}", timeout=600
    )
    play = run.report["plays"][0]
    results = {task["task"]["name"]: task["hosts"]["localhost"] for task in play["tasks"]}
    failures = {name: result.get("msg") for name, result in results.items() if result.get("failed")}
    assert failures == {} and run.returncode == 0, failures or run.tail()
    assert list(results) == [task["name"] for task in tasks]
    assert results["redis"]["size"] == (tmp_path / "dump.rdb").stat().st_size > 0
    assert results["kubernetes"]["changed"] is True and results["kubernetes, release"]["changed"] is True
    assert results["haproxy"]["unreachable_instances"] == [] and results["haproxy"]["serving"]
