"""The lab's images run: each one imported into a throwaway containerd (tests/lab/containerd.py) and run with
``ctr run`` doing what its pods do (issue 15). Builds what the image cache lacks (cold: a few minutes)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import urllib.error
import urllib.request

import pytest

from ansible_collections.hanzo.kms.plugins.module_utils import backup_layout, redis_backup_job
from tests.lab import containerd, images, pki, s3
from tests.lab.core import Lab, free_port, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="containers need root (containerd, runc, overlay mounts)")


@pytest.fixture(name="recipes", scope="module")
def recipes_fixture():
    return {recipe.name: recipe for recipe in images.lab_recipes()}


@pytest.fixture(name="node", scope="module")
def node_fixture(recipes, tmp_path_factory):
    archives = {name: images.ensure(recipe) for name, recipe in recipes.items()}
    with containerd.running(tmp_path_factory.mktemp("containerd")) as local:
        images.import_into(local.client(), archives)
        yield local
        local.kill_tasks()


@pytest.fixture(name="tasks")
def tasks_fixture(node):
    """The node; every task a test started is killed afterwards."""
    yield node
    node.kill_tasks()


def sh(node, image, script, **options):
    return node.run(image, ["/bin/sh", "-ec", script], **options).stdout


def test_images_are_named_as_the_lab_uses_them(recipes):
    names = images.operator_image_names()
    assert {
        names["operator"],
        names["plugin"],
        names["sidecar"],
        images.POSTGRES_IMAGE,
        images.REDIS_IMAGE,
        images.KMS_STANDIN_IMAGE,
        images.BACKUP_TOOLS_IMAGE,
    } <= set(recipes)
    assert "standin" in images.KMS_STANDIN_IMAGE


def test_postgres_image_has_what_cnpg_calls(node):
    out = sh(
        node,
        images.POSTGRES_IMAGE,
        'id -u; id -un; postgres --version; echo "LANG=$LANG"; '
        "for b in initdb postgres pg_ctl pg_controldata pg_basebackup pg_rewind pg_isready du; "
        'do command -v "$b"; done; locale -a; command -v barman-cloud-wal-archive || echo "no barman-cloud"',
    )
    lines = out.splitlines()
    assert lines[:2] == ["26", "postgres"]
    assert lines[2].startswith("postgres (PostgreSQL) 15.")
    assert "LANG=en_US.utf8" in lines and "en_US.utf8" in lines
    assert len([line for line in lines if line.startswith("/usr/lib/postgresql/15/bin/")]) == 7
    assert "/usr/bin/du" in lines
    assert lines[-1] == "no barman-cloud"  # the plugin's sidecar archives: the operand needs no barman-cloud


def test_initdb_as_the_image_user_into_a_tmpfs(node):
    out = sh(
        node,
        images.POSTGRES_IMAGE,
        "initdb -D /pgdata/data --username=postgres --encoding=UTF8 "
        "--locale-provider=libc >/dev/null && pg_controldata /pgdata/data && ls -ln /pgdata; "
        # LLVM is left out of the image: a query past jit_above_cost must still run (JIT silently off)
        'pg_ctl -D /pgdata/data -w -o "-k /tmp -c listen_addresses=" -l /tmp/pg.log start >/dev/null; '
        'psql -h /tmp -U postgres -Atc "SET jit_above_cost = 0; SELECT sum(g) FROM generate_series(1, 1000) g"; '
        'psql -h /tmp -U postgres -Atc "SHOW lc_messages"; pg_ctl -D /pgdata/data -w stop >/dev/null',
        mounts=["type=tmpfs,src=tmpfs,dst=/pgdata,options=rw:nosuid:nodev:mode=1777"],
    )
    lines = out.splitlines()
    assert "Database cluster state:               shut down" in out
    assert " 26 " in lines[-4]  # data directory owned by the postgres UID
    assert lines[-3:] == ["SET", "500500", "en_US.utf8"]


def test_operator_installs_its_instance_manager_into_the_operand(node, tmp_path):
    names = images.operator_image_names()
    assert "Build:" in node.run(names["operator"], ["/manager", "version"]).stdout
    controller = tmp_path / "controller"
    controller.mkdir(mode=0o777)
    controller.chmod(0o777)
    mount = f"type=bind,src={controller},dst=/controller,options=rbind:rw"
    # what the bootstrap-controller init container runs (working dir /, the copy of "manager" relative to it)
    node.run(names["operator"], ["/manager", "bootstrap", "/controller/manager"], mounts=[mount])
    copied = controller / "manager"
    assert copied.stat().st_size == images.lab_binary("cnpg-manager").stat().st_size
    os.chown(copied, 26, 26)  # in a pod the init container runs as the Cluster's postgres UID and owns the copy
    out = node.run(images.POSTGRES_IMAGE, ["/controller/manager", "version"], mounts=[mount]).stdout
    assert "Build:" in out


def test_plugin_and_sidecar(node):
    names = images.operator_image_names()
    out = node.run(names["plugin"], ["/manager", "--help"]).stdout
    assert "operator" in out and "instance" in out
    out = sh(
        node,
        names["sidecar"],
        "id -u; barman-cloud-wal-archive --version; barman-cloud-backup --version; "
        "python3 -c 'import boto3, psycopg2, snappy, lz4, zstandard; print(boto3.__version__)'; "
        "/manager instance --help | head -1",
    )
    lines = out.splitlines()
    pins = images._sidecar_pins()  # pylint: disable=protected-access
    assert lines[0] == "26"
    assert lines[1] == f"barman-cloud-wal-archive {pins['barman']}"
    assert lines[2] == f"barman-cloud-backup {pins['barman']}"
    assert lines[3] == pins["boto3"]


def test_redis_image_runs_as_the_chart_does(node, tmp_path):
    assert "v=7.0." in node.run(images.REDIS_IMAGE, ["redis-server", "--version"]).stdout
    conf = tmp_path / "etc"
    conf.mkdir()
    (conf / "redis.conf").write_text('appendonly yes\nsave ""\nrename-command FLUSHALL ""\n', encoding="ascii")
    out = sh(
        node,
        images.REDIS_IMAGE,
        'id -u; redis-server /opt/bitnami/redis/mounted-etc/redis.conf --dir /tmp --requirepass "$REDIS_PASSWORD" '
        "--daemonize yes --logfile /tmp/redis.log; "
        # the chart's readinessProbe, polled until the server listens
        'i=0; until REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli ping | grep -q PONG; do i=$((i+1)); '
        "[ $i -lt 100 ] || { cat /tmp/redis.log; exit 1; }; sleep 0.1; done; echo ready; "
        'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli config get appendonly | tail -1',
        mounts=[f"type=bind,src={conf},dst=/opt/bitnami/redis/mounted-etc,options=rbind:ro"],
        env=["REDIS_PASSWORD=lab-secret"],
    )
    assert out.split() == ["1001", "ready", "yes"]


def _http(url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def test_kms_standin_serves_with_postgres_and_redis_of_the_lab_images(tasks):
    taken = set()
    pg_port, redis_port, kms_port = free_port(taken), free_port(taken), free_port(taken)
    tasks.start_task(
        images.POSTGRES_IMAGE,
        [
            "/bin/sh",
            "-ec",
            (
                "initdb -D /tmp/pg --username=postgres --auth=trust >/dev/null; "
                f"exec postgres -D /tmp/pg -p {pg_port} -k /tmp -c listen_addresses=127.0.0.1"
            ),
        ],
        net_host=True,
    )
    tasks.start_task(
        images.REDIS_IMAGE,
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""],
        net_host=True,
    )
    tasks.start_task(
        images.KMS_STANDIN_IMAGE,
        net_host=True,
        env=[
            f"DB_CONNECTION_URI=postgresql://postgres@127.0.0.1:{pg_port}/postgres",
            f"REDIS_URL=redis://127.0.0.1:{redis_port}",
            "HOST=127.0.0.1",
            f"PORT={kms_port}",
            "KMS_SITE=dc9",
            f"SITE_URL=http://127.0.0.1:{kms_port}",
        ],
    )
    base = f"http://127.0.0.1:{kms_port}"

    def healthy():
        answer = _http(f"{base}/api/status")
        return answer if answer[0] == 200 else None

    status, headers, body = wait_until(healthy, 60, "the KMS stand-in's /api/status to answer 200")
    assert body["message"] == "Ok" and headers["X-KMS-Site"] == "dc9" and status == 200
    assert _http(f"{base}/api/v3/secrets/raw/lab", {"secretValue": "s3cret"})[0] == 200
    status, _headers, body = _http(f"{base}/api/v3/secrets/raw/lab")
    assert status == 200 and body["secret"]["secretValue"] == "s3cret"


def test_backup_tools_run_the_collections_backup_job(tasks, tmp_path):
    out = sh(
        tasks,
        images.BACKUP_TOOLS_IMAGE,
        "id -u; kubectl version --client; date --version | head -1; "
        "date -u -d @0 +%Y-%m-%dT%H:%M:%SZ; mktemp; command -v grep; "
        'python3 -c \'import anycrc, boto3, redis; print("boto3", boto3.__version__); print("redis", redis.__version__)\'',
    )
    lines = out.splitlines()
    assert lines[0] == "1001"
    assert "Client Version: v1.34.2" in lines
    assert "GNU coreutils" in out and "1970-01-01T00:00:00Z" in lines
    requirements, _pins = images.backup_job_pins()
    pinned = dict(requirement.split("==") for requirement in requirements)
    assert f"boto3 {pinned['boto3']}" in lines and f"redis {pinned['redis']}" in lines

    # The CronJob's backup container: the collection's redis_backup_job with the settings the role's template sets
    # (the object store Secret's AWS_* variables, AWS_ENDPOINT_URL included), against the Redis image and the lab's
    # SeaweedFS; it writes what hanzo.kms.redis_rdb_backup writes.
    (tmp_path / "lab").mkdir()
    lab = Lab(tmp_path / "lab")
    lab.state = {"version": 1}
    try:
        ca, lab.state["pki"] = pki.lab_ca(lab)
        entry = s3.up(lab, ca)
        redis_port = free_port()
        tasks.start_task(
            images.REDIS_IMAGE,
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--requirepass", "pw"],
            net_host=True,
        )
        sh(
            tasks,
            images.REDIS_IMAGE,
            f"i=0; until REDISCLI_AUTH=pw redis-cli -p {redis_port} set k v | grep -q OK; "
            "do i=$((i+1)); [ $i -lt 100 ]; sleep 0.1; done",
            net_host=True,
        )
        # the CA as the CronJob gets it: a file mounted read-only, named by AWS_CA_BUNDLE
        ca_mount = f"type=bind,src={entry['ca_file']},dst=/etc/hanzo-kms/s3-ca/ca.crt,options=rbind:ro"
        proc = tasks.run(
            images.BACKUP_TOOLS_IMAGE,
            ["python3", "-m", redis_backup_job.__name__],
            net_host=True,
            mounts=[ca_mount],
            env=[
                "REDIS_HOST=127.0.0.1",
                f"REDIS_PORT={redis_port}",
                "REDIS_PASSWORD=pw",
                f"BACKUP_BUCKET={entry['bucket']}",
                "BACKUP_PREFIX=redis",
                "BACKUP_SITE=dc9",
                "S3_ADDRESSING_STYLE=path",
                "AWS_CA_BUNDLE=/etc/hanzo-kms/s3-ca/ca.crt",
                f"AWS_ACCESS_KEY_ID={entry['access_key']}",
                f"AWS_SECRET_ACCESS_KEY={entry['secret_key']}",
                f"AWS_DEFAULT_REGION={entry['region']}",
                f"AWS_ENDPOINT_URL={entry['endpoint_url']}",
            ],
        )
        result = json.loads(proc.stdout)
        assert backup_layout.parse_key(result["key"]).site == "dc9"
        client = s3.client(entry)
        dump = client.get_object(Bucket=entry["bucket"], Key=result["key"])["Body"].read()
        manifest = client.get_object(Bucket=entry["bucket"], Key=result["manifest_key"])
        assert dump.startswith(b"REDIS")
        assert manifest["ContentType"] == "application/json"
        assert manifest["Body"].read() == backup_layout.encode_manifest(result["manifest"])
        assert result["manifest"]["keys"] == 1 and result["manifest"]["verified"] is not None
        assert result["sha256"] == hashlib.sha256(dump).hexdigest()
    finally:
        lab.stop_all()
        shutil.rmtree(tmp_path / "lab", ignore_errors=True)
