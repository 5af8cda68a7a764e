"""The CNPG operator and Barman Cloud plugin manifests rendered by make k8s-bins (tests/lab/cnpg_operator.py).

- they are the upstream releases (CNPG's ``releases/cnpg-<version>.yaml``, the plugin's ``manifest.yaml``) apart from
  the lab's documented changes: ``imagePullPolicy: IfNotPresent``, the plugin's release images instead of the
  ``-testing:main`` ones its committed manifest names, and no cert-manager objects;
- a lab kube-apiserver accepts every object (server-side apply, ``dryRun=All``: nothing is persisted, so the
  webhooks, which would need a running operator, never take effect on the shared lab) and echoes the CRDs, webhook
  configurations and Deployments (images, pull policy) as rendered;
- the plugin's TLS Secrets (tests/lab/cnpg_plugin_tls.py, shaped as roles/cnpg creates them) are valid
  ``kubernetes.io/tls`` Secrets; the real plugin binary serves its gRPC endpoint with them and accepts only the client certificate
  of the client Secret, checked the way CNPG checks it (trusts exactly the server Secret's ``tls.crt``, server name =
  the Service name).

Needs ``make k8s-bins`` and, for the apiserver tests, the lab (``HANZO_KMS_TEST_LAB_DIR``) or a clusters-only lab
(``python -m tests.lab.kube up --dir D``, then ``HANZO_KMS_KUBE_DEV_DIR=D``).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.lab import cnpg_operator, cnpg_plugin_tls, kube, kube_build
from tests.lab.core import free_port, wait_until
from tests.lab.kube_fixtures import kube_sites  # noqa: F401  pylint: disable=unused-import

WAIT = 60
NAMESPACE_GONE_WAIT = 120

if os.environ.get("HANZO_KMS_KUBE_DEV_DIR"):

    @pytest.fixture(scope="session", name="lab")
    def _dev_lab():
        """Development only: the state of a lab started with ``python -m tests.lab.kube up``."""
        return json.loads(Path(os.environ["HANZO_KMS_KUBE_DEV_DIR"], "state.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module", name="build")
def _build():
    """The build cache: paths (kube.ensure_binaries), manifest.json and the rendered documents."""
    paths = kube.ensure_binaries()
    manifest = kube_build.cached()
    root = kube_build.cache_root()
    return {
        "paths": paths,
        "manifest": manifest,
        "operator": cnpg_operator.read_manifest(root / manifest["assets"]["manifests"]["operator"]),
        "plugin": cnpg_operator.read_manifest(root / manifest["assets"]["manifests"]["plugin"]),
    }


def _module_source(module, version):
    go = kube_build.check_go()
    return Path(
        json.loads(
            subprocess.run(
                [go, "mod", "download", "-json", f"{module}@{version}"],
                check=True,
                capture_output=True,
                text=True,
                cwd=kube_build.TOOLS_DIR,
                env=dict(os.environ, GOTOOLCHAIN="local"),
            ).stdout
        )["Dir"]
    )


def _by_key(docs):
    return {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in docs}


def test_the_operator_manifest_is_cnpg_release_with_if_not_present(build):
    source = _module_source(kube_build.CNPG_MODULE, kube_build.CNPG_VERSION)
    release = cnpg_operator.read_manifest(source / "releases" / f"cnpg-{kube_build.CNPG_VERSION.lstrip('v')}.yaml")
    assert release != build["operator"]  # upstream pulls Always
    assert _by_key(cnpg_operator.adapt_for_lab(release)) == _by_key(build["operator"])
    images = build["manifest"]["images"]
    assert cnpg_operator.deployment_images(build["operator"]) == {"cnpg-controller-manager": [images["operator"]]}
    assert images["operator"] == f"ghcr.io/cloudnative-pg/cloudnative-pg:{kube_build.CNPG_VERSION.lstrip('v')}"


def test_the_plugin_manifest_is_its_release_without_cert_manager(build):
    upstream = cnpg_operator.adapt_for_lab(
        cnpg_operator.read_manifest(
            _module_source(kube_build.BARMAN_MODULE, kube_build.BARMAN_VERSION) / "manifest.yaml"
        )
    )
    images = build["manifest"]["images"]
    assert images["plugin"] == f"ghcr.io/cloudnative-pg/plugin-barman-cloud:{kube_build.BARMAN_VERSION}"
    assert images["sidecar"] == f"ghcr.io/cloudnative-pg/plugin-barman-cloud-sidecar:{kube_build.BARMAN_VERSION}"
    assert not [d for d in build["plugin"] if d["apiVersion"].startswith("cert-manager.io/")]

    def release_view(docs):
        """Name the generated Secret (its hash suffix follows its content) and the images as a release does."""
        secret = next(d for d in docs if d["kind"] == "Secret")
        old_name = secret["metadata"]["name"]
        secret["metadata"]["name"] = "plugin-barman-cloud-<hash>"
        sidecar = base64.b64decode("".join(secret["data"]["SIDECAR_IMAGE"].split())).decode()
        secret["data"] = {"SIDECAR_IMAGE": sidecar.replace("-testing:main", f":{kube_build.BARMAN_VERSION}")}
        for deployment in (d for d in docs if d["kind"] == "Deployment"):
            for container in cnpg_operator.containers(deployment):
                container["image"] = container["image"].replace("-testing:main", f":{kube_build.BARMAN_VERSION}")
                for env in container.get("env") or []:
                    ref = (env.get("valueFrom") or {}).get("secretKeyRef") or {}
                    if ref.get("name") == old_name:
                        ref["name"] = secret["metadata"]["name"]
        return _by_key(docs)

    rendered = json.loads(json.dumps(build["plugin"]))  # release_view edits in place
    assert release_view(upstream) == release_view(rendered)
    secret = next(d for d in build["plugin"] if d["kind"] == "Secret")
    assert base64.b64decode(secret["data"]["SIDECAR_IMAGE"]).decode() == images["sidecar"]


# -- on a lab apiserver ------------------------------------------------------------------------------------------------
def _resource_path(api, doc, known):
    """The API path of ``doc``, from the apiserver's discovery (``known`` caches it: (apiVersion, kind) -> ...)."""
    api_version, kind = doc["apiVersion"], doc["kind"]
    if (api_version, kind) not in known:
        prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        status, body = api.get(prefix)
        assert status == 200, f"discovery of {api_version} failed ({status}): {body}"
        for resource in body["resources"]:
            if "/" not in resource["name"]:  # not a subresource
                known[(api_version, resource["kind"])] = (prefix, resource["name"], resource["namespaced"])
    prefix, plural, namespaced = known[(api_version, kind)]
    namespace = f"/namespaces/{doc['metadata']['namespace']}" if namespaced else ""
    return f"{prefix}{namespace}/{plural}/{doc['metadata']['name']}"


def _dry_run_apply(api, known, doc):
    status, body = api.request(
        "PATCH",
        _resource_path(api, doc, known),
        body=doc,
        content_type="application/apply-patch+yaml",
        timeout=60,
        params={"fieldManager": "hanzo-kms-test", "force": "true", "dryRun": "All"},
    )
    assert status in (200, 201), f"dry-run apply of {doc['kind']} {doc['metadata']['name']}: {status} {body}"
    return body


@pytest.fixture(name="dc1_api")
def _dc1_api(kube_sites):  # pylint: disable=redefined-outer-name
    return kube.Api.from_entry(kube_sites["dc1"])


@pytest.fixture(name="operator_namespace")
def _operator_namespace(dc1_api, build):
    """(name, created): the manifests' namespace, created for real when absent (dry runs need it), deleted after."""
    (namespace,) = [d for d in build["operator"] if d["kind"] == "Namespace"]
    name = namespace["metadata"]["name"]
    path = f"/api/v1/namespaces/{name}"
    created = dc1_api.get(path)[0] == 404
    if created:
        dc1_api.apply(namespace)
    yield name, created
    if created:
        dc1_api.request("DELETE", path)
        wait_until(lambda: dc1_api.get(path)[0] == 404, NAMESPACE_GONE_WAIT, f"namespace {name} to be deleted")


def test_the_lab_apiserver_accepts_both_manifests_as_rendered(dc1_api, build, operator_namespace):
    namespace = operator_namespace[0]
    docs = build["operator"] + build["plugin"]
    assert {d["metadata"].get("namespace") for d in docs} == {None, namespace}
    # what exists before (nothing, unless the operator was installed on this lab, e.g. by the cnpg role)
    probes = [
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/poolers.postgresql.cnpg.io",
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/cnpg-validating-webhook-configuration",
        f"/apis/apps/v1/namespaces/{namespace}/deployments/cnpg-controller-manager",
    ]
    before = [dc1_api.get(path)[0] for path in probes]
    known = {}
    echoed = {(d["kind"], d["metadata"]["name"]): _dry_run_apply(dc1_api, known, d) for d in docs}

    rendered = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    crds = [key for key in rendered if key[0] == "CustomResourceDefinition"]
    crd_names = sorted(name for _kind, name in crds)
    assert crd_names == build["manifest"]["assets"]["crds_available"]
    assert set(kube_build.LAB_CRDS) < set(crd_names)
    for key in crds:
        spec, sent = echoed[key]["spec"], rendered[key]["spec"]
        assert (spec["group"], spec["names"], spec["scope"]) == (sent["group"], sent["names"], sent["scope"])
        assert [(v["name"], v["served"], v["storage"], v["schema"]) for v in spec["versions"]] == [
            (v["name"], v["served"], v["storage"], v["schema"]) for v in sent["versions"]
        ]

    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        (key,) = [k for k in rendered if k[0] == kind]
        assert key[1] == f"cnpg-{'mutating' if kind.startswith('Mutating') else 'validating'}-webhook-configuration"
        webhooks = [
            (w["name"], w["clientConfig"]["service"], w["rules"], w["failurePolicy"], w["sideEffects"])
            for w in echoed[key]["webhooks"]
        ]
        # the apiserver defaults the service port (443) and each rule's scope ("*")
        assert webhooks == [
            (
                w["name"],
                {"port": 443, **w["clientConfig"]["service"]},
                [{"scope": "*", **rule} for rule in w["rules"]],
                w["failurePolicy"],
                w["sideEffects"],
            )
            for w in rendered[key]["webhooks"]
        ]
        assert {w[1]["name"] for w in webhooks} == {"cnpg-webhook-service"}

    images = build["manifest"]["images"]
    expected = {
        "cnpg-controller-manager": [(images["operator"], "IfNotPresent")],
        "barman-cloud": [(images["plugin"], "IfNotPresent")],
    }
    echoed_images = {
        name: [(c["image"], c["imagePullPolicy"]) for c in cnpg_operator.containers(body)]
        for (kind, name), body in echoed.items()
        if kind == "Deployment"
    }
    assert echoed_images == expected
    for (kind, name), body in echoed.items():
        if kind == "Deployment":
            assert (
                body["spec"]["template"]["spec"]["containers"][0]["args"]
                == rendered[(kind, name)]["spec"]["template"]["spec"]["containers"][0]["args"]
            )

    # the dry run persisted nothing
    assert [dc1_api.get(path)[0] for path in probes] == before


def test_the_plugin_tls_secrets_are_valid_kubernetes_tls_secrets(dc1_api, build, operator_namespace):
    name = operator_namespace[0]
    known = {}
    for secret in cnpg_plugin_tls.plugin_tls_secrets(build["plugin"]):
        assert secret["metadata"]["namespace"] == name
        body = _dry_run_apply(dc1_api, known, secret)
        assert body["type"] == "kubernetes.io/tls"


# -- the real plugin with those secrets --------------------------------------------------------------------------------
def _write_secret(folder, secret):
    folder.mkdir()
    for key, value in secret["data"].items():
        (folder / key).write_bytes(base64.b64decode(value))


def _handshake(port, cafile, certfile, keyfile):
    """A TLS 1.3 handshake as CNPG's operator makes it: trusts exactly ``cafile``, server name = the Service name."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_verify_locations(cafile=str(cafile))
    # CNPG's Go client accepts the server's leaf because it is in its root pool; OpenSSL needs this flag for that
    context.verify_flags |= ssl.VerifyFlags.VERIFY_X509_PARTIAL_CHAIN
    context.load_cert_chain(str(certfile), str(keyfile))
    context.set_alpn_protocols(["h2"])  # gRPC
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        with context.wrap_socket(sock, server_hostname="barman-cloud") as tls:
            selected = tls.selected_alpn_protocol()
            tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000"))
            # the server's first HTTP/2 frame header (SETTINGS) proves the client certificate was accepted
            return selected, tls.recv(9)


def test_the_real_plugin_serves_with_the_lab_tls_secrets(kube_sites, build):  # pylint: disable=redefined-outer-name
    need = cnpg_plugin_tls.plugin_tls_requirements(build["plugin"])
    # self-signed, as roles/cnpg makes them (the operator's Go client needs it; see cnpg_plugin_tls.plugin_tls_secrets)
    server, client = cnpg_plugin_tls.plugin_tls_secrets(build["plugin"])
    other_client = cnpg_plugin_tls.plugin_tls_secrets(build["plugin"])[1]
    deployment = next(d for d in build["plugin"] if d["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    with tempfile.TemporaryDirectory(prefix="barman-cloud-plugin-") as tmp:
        tmp = Path(tmp)
        _write_secret(tmp / "server", server)
        _write_secret(tmp / "client", client)
        port = free_port()
        # the Deployment's own arguments, with the mount paths under tmp; no leader election outside a pod
        argv = (
            [str(build["paths"]["barman-cloud-plugin"])]
            + [
                a.replace("=/server/", f"={tmp}/server/")
                .replace("=/client/", f"={tmp}/client/")
                .replace(f"--server-address=:{need['port']}", f"--server-address=127.0.0.1:{port}")
                for a in args
                if a != "--leader-elect"
            ]
            + ["--metrics-bind-address=0", "--health-probe-bind-address=0"]
        )
        env = dict(
            os.environ, KUBECONFIG=kube_sites["dc1"]["kubeconfig"], SIDECAR_IMAGE=build["manifest"]["images"]["sidecar"]
        )
        with open(tmp / "plugin.log", "wb") as log:
            # pylint: disable-next=consider-using-with
            proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:

            def listening():
                assert proc.poll() is None, f"the plugin exited: {(tmp / 'plugin.log').read_text()[-2000:]}"
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return True

            wait_until(listening, WAIT, f"the Barman Cloud plugin to listen on {port}")
            selected, frame = _handshake(
                port, tmp / "server" / "tls.crt", tmp / "client" / "tls.crt", tmp / "client" / "tls.key"
            )
            assert selected == "h2" and frame[3] == 0x4, (selected, frame)

            # another client certificate (same name, same shape) that is not the client Secret's is refused: pinned
            _write_secret(tmp / "other", other_client)
            try:
                refused = _handshake(
                    port, tmp / "server" / "tls.crt", tmp / "other" / "tls.crt", tmp / "other" / "tls.key"
                )
            except (ssl.SSLError, OSError) as exc:  # TLS 1.3: the server's alert arrives after the client's Finished
                refused = exc
            assert not isinstance(refused, tuple) or len(refused[1]) < 9, refused
        finally:
            proc.terminate()
            proc.wait(timeout=30)
