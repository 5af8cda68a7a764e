"""Offline render of inventories/example (issue 16): what install.yml would put on the sites and the HAProxy pair.

No cluster and no lab: ``tests/integration/playbooks/render_example.yml`` runs install.yml's inventory check, loads its
variable mapping (playbooks/vars/install_*.yml), renders every site's objects with the roles' own rendering tasks and
runs the global_lb role into this test's directory. The example inventory's certificate paths point at throwaway PEMs
made here (-e); everything else is the inventory's. Then:

- ``haproxy -c`` accepts each rendered haproxy.cfg, and TLS to the sites is verified (``verify required`` with the CA);
- ``keepalived --config-test`` accepts each LB host's VRRP configuration: one VIP, one router id, own priorities;
- every rendered Kubernetes object parses as YAML and is named;
- the host name HAProxy sends to the sites (Host header of forwarded requests and health checks, SNI, the name the
  certificate is verified against) is a host of each site's Ingress, so a real ingress controller routes it;
- a TLS site without a CA is refused before anything is rendered, naming the variable to set;
- with one object store per data center (object_storage_layout per_site, each site's own object_storage_* values),
  each site's ObjectStore points at that site's store with its own Secrets, every site defines all stores and the
  Redis backup CronJob writes to its site's store; a per-site layout missing a site's store is refused;
- the lab's kube-apiserver (v1.34, the CNPG and Barman Cloud CRDs installed) accepts every rendered object in a
  server-side dry run with strict field validation (the one test here that needs the lab).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.ansible_run import COLLECTIONS_PATH, ansible_env, run_playbook
from tests.crd_schema import assert_cnpg_valid
from tests.lab import kube as lab_kube
from tests.lab.kube_fixtures import kube_sites, kubeconfig, kubectl  # noqa: F401  pylint: disable=unused-import

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = REPO / "tests" / "integration" / "playbooks" / "render_example.yml"
LB_HOSTS = ("lb1.example.net", "lb2.example.net")
SITES = ("dc1", "dc2")


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(name="pems", scope="module")
def fixture_pems(tmp_path_factory):
    """A CA that signed the sites' ingress certificates, and the LB's own certificate with its key (one PEM)."""
    out = tmp_path_factory.mktemp("pems")
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=ingress test CA",
        "-days",
        "2",
        "-keyout",
        str(out / "ca-key.pem"),
        "-out",
        str(out / "ingress-ca.pem"),
    )
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=kms.example.net",
        "-days",
        "2",
        "-keyout",
        str(out / "kms-key.pem"),
        "-out",
        str(out / "kms-crt.pem"),
    )
    (out / "kms.pem").write_text((out / "kms-crt.pem").read_text() + (out / "kms-key.pem").read_text())
    return out


def render(tmp_path, pems, inventory="inventories/example", **extra):
    """Run the render playbook on ``inventory`` (inventories/example); return (process, render dir)."""
    collections = tmp_path / "collections" / "ansible_collections" / "hanzo"
    collections.mkdir(parents=True)
    (collections / "kms").symlink_to(REPO)  # this checkout, whatever .venv/collections points at
    out = tmp_path / "out"
    out.mkdir()
    user, group = (
        subprocess.run(["id", flag], capture_output=True, text=True, check=True).stdout.strip()
        for flag in ("-un", "-gn")
    )
    extra_vars = {
        "render_dir": str(out),
        # the control node stands for every host; nothing is installed or started
        "ansible_connection": "local",
        "ansible_become": False,
        "ansible_python_interpreter": sys.executable,
        "global_lb_manage_package": False,
        "global_lb_manage_service": False,
        "global_lb_config_path": f"{out}/{{{{ inventory_hostname }}}}-haproxy.cfg",
        "global_lb_config_owner": user,
        "global_lb_config_group": group,
        "global_lb_server_state_file": f"{out}/{{{{ inventory_hostname }}}}/server-state",
        # never bound (the render only validates), and short: HAProxy refuses a socket path over 97 characters,
        # which a tmp_path under pytest-xdist with a long test name exceeds
        "global_lb_admin_socket": "/run/hanzo-kms-render/{{ inventory_hostname }}.sock",
        "global_lb_keepalived_manage_package": False,
        "global_lb_keepalived_manage_service": False,
        "global_lb_keepalived_config_path": f"{out}/{{{{ inventory_hostname }}}}-keepalived.conf",
        # the files the example inventory names on the LB hosts
        "site_ingress_ca_file": str(pems / "ingress-ca.pem"),
        "global_lb_tls_certificate": str(pems / "kms.pem"),
        "global_lb_admin_tls_certificate": str(pems / "kms.pem"),
        "global_lb_admin_tls_client_ca_file": str(pems / "ingress-ca.pem"),
    }
    extra_vars.update(extra)
    (tmp_path / "extra.json").write_text(json.dumps(extra_vars))
    env = ansible_env(ANSIBLE_COLLECTIONS_PATH=f"{tmp_path / 'collections'}{os.pathsep}{COLLECTIONS_PATH}")
    proc = run_playbook(PLAYBOOK, "-e", f"@{tmp_path / 'extra.json'}", inventory=str(inventory), env=env, timeout=600)
    return proc, out


def backend_lines(config):
    """The lines of the KMS backend section."""
    section = re.search(r"^backend \S+\n(.*?)(?=^\S|\Z)", config, re.M | re.S).group(1)
    return [line.strip() for line in section.splitlines() if line.strip()]


def one(pattern, lines):
    found = sorted({m.group(1) for line in lines for m in [re.search(pattern, line)] if m})
    assert len(found) == 1, (pattern, lines)
    return found[0]


@pytest.fixture(name="rendered", scope="module")
def fixture_rendered(tmp_path_factory, pems):
    proc, out = render(tmp_path_factory.mktemp("example"), pems)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    return out


def test_haproxy_accepts_the_rendered_configuration_and_verifies_the_sites(rendered, pems):
    for host in LB_HOSTS:
        config = rendered / f"{host}-haproxy.cfg"
        check = subprocess.run(["haproxy", "-c", "-f", str(config)], capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        servers = [line for line in backend_lines(config.read_text()) if line.startswith("server ")]
        assert [line.split()[1] for line in servers] == list(SITES)
        for line in servers:
            assert f" ssl verify required ca-file {pems / 'ingress-ca.pem'} " in line, line
        assert "verify none" not in config.read_text()
        assert servers[0].split()[-1] != "disabled" and servers[1].split()[-1] == "disabled"  # dc2 is passive
        # the Runtime API over TLS (the site switch's way in) requires a client certificate, and reaches the admin
        # socket inside the chroot
        text = config.read_text()
        assert re.search(r"^    bind \S+:9443 ssl crt \S+ ca-file \S+ verify required$", text, re.M), text
        assert "stats socket /var/lib/haproxy/admin-tls.sock mode 600 level admin user haproxy" in text
        assert "server runtime_api unix@/admin-tls.sock" in text


def test_keepalived_accepts_the_rendered_configuration_and_the_pair_agrees_on_the_vip(rendered):
    seen = {}
    for host in LB_HOSTS:
        config = rendered / f"{host}-keepalived.conf"
        check = subprocess.run(
            ["keepalived", "--config-test", f"--use-file={config}"], capture_output=True, text=True, check=False
        )
        assert check.returncode == 0, check.stderr
        text = config.read_text()
        seen[host] = {
            key: one(pattern, text.splitlines())
            for key, pattern in (
                ("vip", r"^\s+(\S+) dev eth0$"),
                ("router id", r"virtual_router_id (\d+)"),
                ("priority", r"priority (\d+)"),
            )
        }
        assert 'script "/bin/pidof haproxy"' in text  # the holder gives the VIP up when its HAProxy stops
    assert seen[LB_HOSTS[0]]["vip"] == seen[LB_HOSTS[1]]["vip"] == "192.0.2.10/24"
    assert seen[LB_HOSTS[0]]["router id"] == seen[LB_HOSTS[1]]["router id"]
    assert int(seen[LB_HOSTS[0]]["priority"]) > int(seen[LB_HOSTS[1]]["priority"])


def test_the_ingress_of_every_site_matches_the_host_haproxy_sends(rendered):
    lines = backend_lines((rendered / f"{LB_HOSTS[0]}-haproxy.cfg").read_text())
    sent = {
        "Host header": one(r"^http-request set-header Host (\S+)$", lines),
        "health check Host": one(r"^http-check send hdr Host (\S+)$", lines),
        "SNI": one(r" sni str\(([^)]+)\)", lines),
        "health check SNI": one(r" check-sni (\S+)", lines),
        "verified name": one(r" verifyhost (\S+)", lines),
    }
    assert len(set(sent.values())) == 1, sent
    # the switch's check reads which site answered from the LB (the KMS names none)
    assert "http-response set-header X-KMS-Served-By %[srv_name]" in lines
    host = sent["Host header"]
    for site in SITES:
        objects = yaml.safe_load((rendered / f"{site}.yml").read_text())
        ingress = next(o for o in objects["kms"] if o["kind"] == "Ingress")
        assert host in [rule["host"] for rule in ingress["spec"]["rules"]], (site, ingress)
        assert all(host in entry["hosts"] for entry in ingress["spec"]["tls"]), (site, ingress)


def test_every_rendered_kubernetes_object_is_named(rendered):
    for site in SITES:
        objects = yaml.safe_load((rendered / f"{site}.yml").read_text())
        manifests = objects["cnpg"] + objects["redis"]["objects"] + objects["kms"]
        kinds = {
            "ObjectStore",
            "Cluster",
            "CronJob",
            "Secret",
            "Deployment",
            "Service",
            "Ingress",
            "PodDisruptionBudget",
        }
        assert {o["kind"] for o in manifests} >= kinds
        for obj in manifests:
            assert obj["apiVersion"] and obj["metadata"]["name"] and obj["metadata"]["namespace"] == "kms", obj
        assert objects["redis"]["values"]["auth"]["existingSecret"] == "redis-auth"


def test_pods_verify_the_object_store_and_redis_with_their_cas(rendered):
    """The example's private-CA S3 endpoint and TLS-only Redis reach every pod that talks to them."""
    for site in SITES:
        objects = yaml.safe_load((rendered / f"{site}.yml").read_text())
        for store in (o for o in objects["cnpg"] if o["kind"] == "ObjectStore"):
            assert store["spec"]["configuration"]["endpointCA"] == {"name": "kms-object-store-ca", "key": "ca.crt"}
        values = objects["redis"]["values"]
        assert values["tls"] == {
            "enabled": True,
            "authClients": False,
            "existingSecret": "redis-tls",
            "certFilename": "tls.crt",
            "certKeyFilename": "tls.key",
            "certCAFilename": "ca.crt",
        }
        job = next(o for o in objects["redis"]["objects"] if o["kind"] == "CronJob")["spec"]["jobTemplate"]["spec"]
        pod = job["template"]["spec"]
        backup = pod["containers"][0]
        assert {"name": "REDIS_TLS", "value": "true"} in backup["env"]
        assert {"name": "REDIS_TLS_CA_CERT", "value": "/etc/hanzo-kms/redis-ca/ca.crt"} in backup["env"]
        assert {"name": "AWS_CA_BUNDLE", "value": "/etc/hanzo-kms/s3-ca/ca.crt"} in backup["env"]
        secrets_mounted = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        assert secrets_mounted == {"kms-object-store-ca", "redis-tls"}
        kms = next(o for o in objects["kms"] if o["kind"] == "Deployment")["spec"]["template"]["spec"]
        assert {"name": "NODE_EXTRA_CA_CERTS", "value": "/etc/hanzo-kms/redis-ca/ca.crt"} in kms["containers"][0]["env"]
        assert kms["volumes"] == [
            {"name": "redis-ca", "secret": {"secretName": "redis-tls", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}
        ]
        secret = next(o for o in objects["kms"] if o["kind"] == "Secret")
        assert secret["stringData"]["REDIS_URL"].startswith("rediss://"), "the KMS connects to Redis with TLS"


def test_the_apiserver_accepts_every_rendered_object(rendered, kubectl):  # noqa: F811  pylint: disable=redefined-outer-name
    """What the example inventory renders, as the lab's apiserver (schemas, CRDs, admission) would take it: in a
    namespace of its own (a server-side apply merges into live objects of the same name, and the session lab has its
    own Clusters in ``kms``)."""
    namespace = f"render-test-{secrets.token_hex(3)}"
    for site in SITES:
        objects = yaml.safe_load((rendered / f"{site}.yml").read_text())
        manifests = objects["cnpg"] + objects["redis"]["objects"] + objects["kms"]
        assert {o["metadata"]["namespace"] for o in manifests} == {"kms"}
        for obj in manifests:
            obj["metadata"]["namespace"] = namespace
        # the dry run needs the namespace (install.yml creates it)
        kubectl("--context", site, "create", "namespace", namespace)
        try:
            proc = kubectl(
                "--context",
                site,
                *lab_kube.STRICT_DRY_RUN_APPLY,
                "--field-manager=hanzo-kms-render-test",
                "-f",
                "-",
                input_text=yaml.safe_dump_all(manifests),
                check=False,
            )
        finally:
            kubectl("--context", site, "delete", "namespace", namespace, "--wait=false")
        assert proc.returncode == 0, proc.stderr
        kinds = {o["kind"] for o in manifests}
        assert proc.stdout.count("(server dry run)") == len(manifests) and "Cluster" in kinds, proc.stdout


def test_a_tls_site_without_a_ca_is_refused_before_anything_is_rendered(tmp_path, pems):
    proc, out = render(tmp_path, pems, site_ingress_ca_file="")
    assert proc.returncode != 0
    assert "site_ingress_ca_file" in proc.stdout, proc.stdout[-4000:]
    assert not list(out.iterdir())  # no site object, no haproxy.cfg and no keepalived.conf was written


def per_site_inventory(tmp_path, own_stores=True):
    """inventories/example with one object store per data center: each site's own endpoint, bucket and CA."""
    inventory = tmp_path / "inventory"
    shutil.copytree(REPO / "inventories" / "example", inventory)
    with (inventory / "group_vars" / "kms_sites.yml").open("a") as shared:
        shared.write("object_storage_layout: per_site\n")
    for site in SITES if own_stores else ():
        with (inventory / "group_vars" / f"{site}.yml").open("a") as own:
            own.write(
                f"object_storage_endpoint_url: https://s3.{site}.example.net\n"
                f"object_storage_bucket: kms-backups-{site}\n"
                f'object_storage_ca_bundle: "{{{{ inventory_dir }}}}/files/s3-{site}-ca.crt"\n'
            )
    return inventory


def test_one_object_store_per_data_center(tmp_path, pems):
    """Each site's Cluster archives to its own store, a replica reads its source's; the CronJob uses its own."""
    proc, out = render(tmp_path, pems, inventory=per_site_inventory(tmp_path))
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    for site in SITES:
        objects = yaml.safe_load((out / f"{site}.yml").read_text())
        stores = {
            o["metadata"]["name"]: o["spec"]["configuration"] for o in objects["cnpg"] if o["kind"] == "ObjectStore"
        }
        assert sorted(stores) == [f"kms-pg-{s}-store" for s in SITES]
        for store_site in SITES:
            store = stores[f"kms-pg-{store_site}-store"]
            assert store["destinationPath"] == f"s3://kms-backups-{store_site}/cnpg/{store_site}/"
            assert store["endpointURL"] == f"https://s3.{store_site}.example.net"
            assert store["endpointCA"] == {"name": f"kms-object-store-ca-{store_site}", "key": "ca.crt"}
            assert {ref["name"] for ref in store["s3Credentials"].values()} == {f"kms-object-store-{store_site}"}
        job = next(o for o in objects["redis"]["objects"] if o["kind"] == "CronJob")["spec"]["jobTemplate"]["spec"]
        pod = job["template"]["spec"]
        backup = pod["containers"][0]
        assert {"name": "BACKUP_BUCKET", "value": f"kms-backups-{site}"} in backup["env"]
        assert [e["secretRef"]["name"] for e in backup["envFrom"]] == [f"kms-object-store-{site}"]
        assert {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v} == {
            f"kms-object-store-ca-{site}",
            "redis-tls",
        }


def test_a_per_site_layout_without_a_sites_store_is_refused(tmp_path, pems):
    """Sites without their own object_storage_* share the group's store: the loss of its data center takes both."""
    proc, out = render(tmp_path, pems, inventory=per_site_inventory(tmp_path, own_stores=False))
    assert proc.returncode != 0
    assert "object_storage_layout is per_site, but sites dc1 and dc2 use the same store" in proc.stdout, proc.stdout
    assert not list(out.glob("*.yml")), "nothing is rendered"


def test_volume_snapshot_backups_reach_every_cluster_as_cnpg_accepts_them(tmp_path, pems):
    """Issue 18 item 4: cnpg_volume_snapshot_* from the inventory give every site's Cluster the spec.backup
    .volumeSnapshot CNPG 1.30's CRD accepts (strict schema); without them (the example as it is) there is none."""
    proc, out = render(
        tmp_path,
        pems,
        cnpg_volume_snapshot_class="csi-snapclass",
        cnpg_volume_snapshot_online=False,
        cnpg_volume_snapshot_owner_reference="backup",
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    for site in SITES:
        cluster = next(o for o in yaml.safe_load((out / f"{site}.yml").read_text())["cnpg"] if o["kind"] == "Cluster")
        assert cluster["spec"]["backup"] == {
            "volumeSnapshot": {"className": "csi-snapclass", "online": False, "snapshotOwnerReference": "backup"}
        }
        assert_cnpg_valid("clusters", cluster)


def test_the_example_clusters_take_no_volume_snapshots_by_default(rendered):
    for site in SITES:
        cluster = next(
            o for o in yaml.safe_load((rendered / f"{site}.yml").read_text())["cnpg"] if o["kind"] == "Cluster"
        )
        assert "backup" not in cluster["spec"]
        assert_cnpg_valid("clusters", cluster)
