"""Bring the whole lab up, check it, take it down. Shared by the CLI and the pytest fixtures."""

from __future__ import annotations

import importlib.util
import os
import shutil
import time

from tests.lab import haproxy, kms, lbhost, node, pki, postgres, redis, s3, site_ingress, snapshots
from tests.lab.core import STATE_VERSION, LabError, port_is_free, wait_until

SITES = ("dc1", "dc2")
# Operator mode: the node ports of the Redis master and KMS Services (inventories/lab/group_vars/kms_sites.yml)
REDIS_NODE_PORT = 30379
# The names a site's Redis certificate covers besides its addresses: the chart's master Service in the lab
# inventory's namespace (the backup CronJob and the KMS pods connect to it) and localhost (the readiness probe).
REDIS_TLS_NAMES = ("localhost", "redis-master", "redis-master.kms.svc", "redis-master.kms.svc.cluster.local")
KMS_NODE_PORT = 30080
MARKER = ".hanzo-kms-lab"


def _kube():
    """The Kubernetes component; HANZO_KMS_LAB_WITHOUT_KUBE=1 leaves the clusters out (a developer shortcut for
    quick runs of the non-Kubernetes services; tests that need the clusters then fail, they are not skipped)."""
    if os.environ.get("HANZO_KMS_LAB_WITHOUT_KUBE") == "1" or importlib.util.find_spec("tests.lab.kube") is None:
        return None
    from tests.lab import kube  # pylint: disable=import-outside-toplevel

    return kube


def _wipe(lab):
    """Remove the lab dir, but only one the lab made (it holds the marker), never an arbitrary --dir. What the real
    nodes left (containers, mounts under the dir, network namespaces) goes first: rmtree must not walk into mounts."""
    if lab.dir.exists():
        if not (lab.dir / MARKER).exists():
            raise LabError(f"{lab.dir} exists but is not a lab dir (no {MARKER}); refusing to remove it")
        _teardown_hosts(lab.dir)
        shutil.rmtree(lab.dir)
    else:
        _teardown_hosts(lab.dir)  # a dir removed by hand can still leave namespaces named after it


def _teardown_hosts(lab_dir):
    """Every lab host's leftovers (sites' nodes, LB hosts) and the lab network."""
    node.teardown(lab_dir)


def _stop_everything(lab):
    """Stop the recorded processes (kubelets and their containers first) and remove the nodes' leftovers."""
    node.stop_pods(lab, lab.state)
    stopped = lab.stop_all()
    _teardown_hosts(lab.dir)
    return stopped


def status(lab):
    """[(component, ok, detail)] for every service, checked for real, plus one row per dead process."""
    state = lab.state
    missing = (False, "never started: the last 'up' did not finish; run 'make lab-up' again")
    rows = [("s3", *(s3.check(state["s3"]) if "s3" in state else missing))]
    if "started_in_seconds" not in state:  # killed midway: what runs may look healthy, what was not reached is absent
        rows.append(("lab up", *missing))
    # operator mode: Redis, PostgreSQL and the KMS run in install.yml's pods, so nothing may serve yet
    standin = state.get("cnpg", {}).get("mode", "standin") == "standin"
    for site in SITES:
        entry = state.get("sites", {}).get(site, {})
        if standin:
            rows.append((f"{site} redis", *(redis.check(entry["redis"]) if "redis" in entry else missing)))
            rows.append((f"{site} postgres", *(postgres.check(entry["postgres"]) if "postgres" in entry else missing)))
            rows.append((f"{site} kms (stand-in)", *(kms.check(entry["kms"]) if "kms" in entry else missing)))
        elif "kms" in entry:  # operator mode: the site's ingress stand-in answers (503 until the KMS pods are ready)
            rows.append((f"{site} ingress (stand-in)", *kms.check(entry["kms"])))
        if "kube" in entry:
            problems = _kube().check(lab, entry["kube"])
            healthy_detail = entry["kube"]["server"]
            if "node" in entry["kube"]:
                healthy_detail += (
                    f"; real node {entry['kube']['node']['name']} Ready "
                    f"(containerd, kubelet, kube-proxy running in {entry['kube']['net']['netns']})"
                )
            if "snapshots" in entry["kube"]:
                healthy_detail += f"; CSI driver {entry['kube']['snapshots']['driver']} with volume snapshots"
            rows.append((f"{site} kubernetes", not problems, "; ".join(problems) or healthy_detail))
        elif _kube() is not None:
            rows.append((f"{site} kubernetes", *missing))
    for host in lbhost.HOSTS:
        rows.append((f"{host} ssh", *(lbhost.check_ssh(state, host) if "ssh" in state else missing)))
    if "lb_hosts" in state and "keepalived" in state.get("lb", {}):
        holders = lbhost.vip_holders(state["lb_hosts"])
        rows.append(("vip", len(holders) == 1, f"{state['lb_hosts']['vip']} held by {', '.join(holders) or 'nobody'}"))
    if "lb" not in state:
        rows.append(("haproxy", *missing))
    for instance in state.get("lb", {}).get("instances", []):
        rows.append((f"{instance['name']} haproxy", *haproxy.check_instance(instance, require_serving=standin)))
    for proc in state.get("processes", []):
        if not lab.process_alive(proc):
            rows.append((f"process {proc['name']}", False, f"pid {proc['pid']} is not running (log {proc['log']})"))
    return rows


def healthy(lab):
    return all(row[1] for row in status(lab))


def cnpg_mode():
    """How this lab runs CloudNativePG: HANZO_KMS_LAB_CNPG (``standin``, the default, or ``operator``)."""
    mode = os.environ.get("HANZO_KMS_LAB_CNPG") or "standin"
    if mode not in ("standin", "operator"):
        raise LabError(f"HANZO_KMS_LAB_CNPG={mode!r}: use 'standin' (default) or 'operator'")
    return mode


def object_stores_mode():
    """The lab's object stores: HANZO_KMS_LAB_OBJECT_STORES (``shared``, the default: one SeaweedFS on the host, or
    ``per-site``: one more per site, which dies with its site, for one object store per data center)."""
    mode = os.environ.get("HANZO_KMS_LAB_OBJECT_STORES") or "shared"
    if mode not in ("shared", "per-site"):
        raise LabError(f"HANZO_KMS_LAB_OBJECT_STORES={mode!r}: use 'shared' (default) or 'per-site'")
    return mode


def snapshots_mode(mode):
    """Whether the lab gets CSI volume snapshots (HANZO_KMS_LAB_SNAPSHOTS=1, tests/lab/snapshots.py): operator mode
    only, since only the real operator takes volumeSnapshot backups."""
    wanted = snapshots.enabled()
    if wanted and mode != "operator":
        raise LabError(f"{snapshots.ENV}=1 needs HANZO_KMS_LAB_CNPG=operator (the stand-in takes no volume snapshots)")
    return wanted


def _reusable(lab, mode, log):
    """True when the loaded lab is healthy and runs CNPG in ``mode``; otherwise says why it is restarted."""
    try:
        running = lab.state.get("cnpg", {}).get("mode", "standin")
        if running != mode:
            log(f"lab in {lab.dir} runs CNPG as {running}, {mode} was asked (HANZO_KMS_LAB_CNPG): restarting it")
            return False
        stores = lab.state.get("object_stores", "shared")
        if stores != object_stores_mode():
            log(f"lab in {lab.dir} has {stores} object stores, not as HANZO_KMS_LAB_OBJECT_STORES asks: restarting it")
            return False
        if lab.state.get("snapshots", False) != snapshots_mode(mode):
            log(
                f"lab in {lab.dir} has CSI volume snapshots {'on' if lab.state.get('snapshots') else 'off'}, not as "
                f"{snapshots.ENV} asks: restarting it"
            )
            return False
        if "pki" not in lab.state or "redis_tls" not in lab.state["sites"].get("dc1", {}):
            log(f"lab in {lab.dir} predates the lab CA (plain-text S3 or Redis): restarting it")
            return False
        if "lb_hosts" not in lab.state:
            log(f"lab in {lab.dir} predates the LB hosts (HAProxy on loopback): restarting it")
            return False
        if "public_host" not in lab.state.get("lb", {}):
            log(f"lab in {lab.dir} predates TLS on the LB frontends: restarting it")
            return False
        if healthy(lab):
            return True
    except (KeyError, LabError):
        pass
    dead = [p["name"] for p in lab.state.get("processes", []) if not lab.process_alive(p)]
    log(
        f"lab state in {lab.dir} is left from an interrupted or broken run (dead: {', '.join(dead) or 'none'}); "
        "stopping what remains and starting afresh"
    )
    return False


def _up_host_services(lab, sites, ca):
    """Stand-in mode: Redis, PostgreSQL (dc2 streams from dc1) and the KMS stand-in as host processes, and the HAProxy
    pair in front of the stand-ins (kwok runs no pods, so the collection's objects have nothing behind them)."""
    for site in SITES:
        sites[site]["redis"] = redis.up(
            lab, site, tls=dict(sites[site]["redis_tls"], ca_file=lab.state["pki"]["ca_file"])
        )
    sites["dc1"]["postgres"] = postgres.up_primary(lab, "dc1")
    sites["dc2"]["postgres"] = postgres.up_standby(lab, "dc2", sites["dc1"]["postgres"])
    gateway = lab.state["lb_hosts"]["gateway"]
    for site in SITES:  # on the LB network's gateway: the LB hosts reach the host's services there
        # TLS as the site's ingress serves it: a certificate for the public host name the LBs verify
        tls = dict(
            pki.issue_server(lab, ca, f"kms-{site}", dns=(haproxy.PUBLIC_HOST,), ips=(gateway,)),
            ca_file=lab.state["pki"]["ca_file"],
        )
        sites[site]["kms"] = kms.up(lab, site, sites[site]["postgres"], sites[site]["redis"], host=gateway, tls=tls)
    lab.save()
    lab.state["lb"] = haproxy.up(
        lab, {site: _kms_address(sites[site]["kms"]) for site in SITES}, lab.state["lb_hosts"], ca
    )
    _vip_up(lab)


def _kms_address(entry):
    """Where the LBs reach a site's KMS: (host, port), and the CA file when it serves TLS."""
    return (entry["host"], entry["port"]) + ((entry["ca_file"],) if entry.get("ca_file") else ())


def _vip_up(lab):
    """keepalived on the LB hosts; the KMS's public URL is the VIP's."""
    lab.state["lb"]["keepalived"] = lbhost.vip_up(lab, lab.state["lb_hosts"], lab.state["lb"])
    lab.state["lb"]["vip_url"] = f"https://{lab.state['lb_hosts']['vip'].split('/')[0]}:{haproxy.FRONTEND_PORT}"
    lab.save()


def _pod_service_addresses(lab, sites, ca):
    """Operator mode: Redis and the KMS run in pods that install.yml creates; the control node reaches Redis at the
    real node's address through the node port the lab inventory gives its Service (no password here: the operations
    playbooks read it from the redis role's Secret, as in production), HAProxy the KMS through the site's ingress
    stand-in (TLS for the public host name, tests/lab/site_ingress.py) in front of the KMS Service's node port."""
    for site in SITES:
        net = sites[site]["kube"]["net"]
        sites[site]["redis"] = {
            "host": net["node_ip"],
            "port": REDIS_NODE_PORT,
            "in_pod": True,
            "ca_file": lab.state["pki"]["ca_file"],
        }
        sites[site]["kms"] = site_ingress.up(
            lab, site, net["node_ip"], net["netns"], ca, haproxy.PUBLIC_HOST, KMS_NODE_PORT
        )


def up(lab, log=print):
    """Start every service; idempotent. Returns the state. On failure nothing is left running.
    HANZO_KMS_LAB_CNPG=operator starts the lab for the real CNPG operator (recorded as ``state["cnpg"]``); a lab
    that runs in the other mode is restarted."""
    mode = cnpg_mode()
    with_snapshots = snapshots_mode(mode)
    if lab.load() is not None:
        if _reusable(lab, mode, log):
            log(f"lab already up in {lab.dir}")
            return lab.state
        down(lab, log=lambda _msg: None)
    elif lab.dir.exists() and any(lab.dir.iterdir()):
        _wipe(lab)
    started = time.monotonic()
    lab.dir.mkdir(parents=True, exist_ok=True)
    lab.dir.chmod(0o755)  # PostgreSQL runs as 'postgres' and must reach its data dir below this one
    (lab.dir / MARKER).touch()
    lab.state = {"version": STATE_VERSION, "dir": str(lab.dir), "processes": [], "sites": {}, "cnpg": {"mode": mode}}
    lab.state["snapshots"] = with_snapshots
    lab.save()
    try:
        kube = _kube()
        service_ca, lab.state["pki"] = pki.lab_ca(lab)
        lab.state["lb_hosts"] = lbhost.network_up(lab)
        lab.state["ssh"] = lbhost.ssh_up(lab, lab.state["lb_hosts"])
        lab.save()
        links = node.site_links(lab, len(SITES)) if kube else [None] * len(SITES)
        host_ips = sorted({link["host_ip"] for link in links if link})
        lab.state["s3"] = s3.up(lab, service_ca, host_ips=host_ips)
        lab.state["object_stores"] = object_stores_mode()
        sites = lab.state["sites"]
        for index, site in enumerate(SITES):
            # the site's Redis: a host process (stand-in mode) or the chart's pod behind a node port (operator mode)
            ips = ("127.0.0.1", links[index]["node_ip"]) if links[index] else ("127.0.0.1",)
            sites[site] = {
                "role": "active" if index == 0 else "passive",
                "redis_tls": pki.issue_server(lab, service_ca, f"redis-{site}", REDIS_TLS_NAMES, ips),
            }
            if lab.state["object_stores"] == "per-site":
                sites[site]["s3"] = _site_store(lab, service_ca, site, host_ips, links[index])
        if mode == "standin":
            _up_host_services(lab, sites, service_ca)
        if kube is not None:
            for index, site in enumerate(SITES):
                sites[site]["kube"] = kube.up(
                    lab, site, index, s3=lab.state["s3"], cnpg=mode, defer_images=True, snapshots=with_snapshots
                )
                lab.save()
            for site in SITES:  # operator mode: each site's images were imported while the next one started
                kube.finish_images(sites[site]["kube"])
            if hasattr(kube, "write_merged_kubeconfig"):
                lab.state["kubeconfig"] = str(kube.write_merged_kubeconfig(lab, [sites[s]["kube"] for s in SITES]))
        if mode == "operator":
            _pod_service_addresses(lab, sites, service_ca)
            kms_addresses = {site: _kms_address(sites[site]["kms"]) for site in SITES}
            lab.state["lb"] = haproxy.up(lab, kms_addresses, lab.state["lb_hosts"], service_ca, wait_for_site=None)
            _vip_up(lab)
    except BaseException:
        _stop_everything(lab)
        raise
    lab.state["started_in_seconds"] = round(time.monotonic() - started, 1)
    lab.save()
    log(f"lab up in {lab.dir} after {lab.state['started_in_seconds']}s; state file {lab.state_path}")
    return lab.state


def _site_store(lab, ca, site, host_ips, link):
    """The site's own object store (per-site lab): a SeaweedFS on the host, lab process ``<site>-s3`` (node.lose_site
    stops it with the site, power_on starts it again). Pods of every site reach it at the host side of this site's
    veth (a host address, so from any site's namespace), the control node too: ``pod_endpoint_url``."""
    entry = s3.up(lab, ca, host_ips=host_ips, name=f"{site}-s3", bucket=f"{s3.BUCKET}-{site}")
    host = link["host_ip"] if link else "127.0.0.1"
    entry["pod_endpoint_url"] = f"https://{host}:{entry['ports']['s3']}"
    return entry


def _ports(state):
    ports = [state["s3"]["ports"][name] for name in state.get("s3", {}).get("ports", {})]
    for entry in state.get("sites", {}).values():
        ports += list(entry.get("s3", {}).get("ports", {}).values())
    for entry in state.get("sites", {}).values():
        ports += [entry[c]["port"] for c in ("redis", "postgres", "kms") if c in entry and not entry[c].get("in_pod")]
    return ports


def down(lab, log=print):
    """Stop only the processes this lab started (by pid), check their ports are free, remove the dir."""
    try:
        state = lab.load()
    except LabError:
        state = None  # an unreadable state file: nothing we can trust to stop; the dir is still removed
    if state is None:
        _wipe(lab)
        log(f"no lab in {lab.dir}; nothing to stop")
        return []
    stopped = _stop_everything(lab)
    ports = _ports(state)
    try:
        wait_until(lambda: all(port_is_free(p) for p in ports), 30, "the lab's ports to be released")
    except LabError as exc:
        busy = ", ".join(str(p) for p in ports if not port_is_free(p))
        raise LabError(f"{exc}; still in use: {busy or 'none (released just now)'}") from exc
    _wipe(lab)
    log(f"lab in {lab.dir} stopped ({len(stopped)} processes) and removed")
    return stopped


def power_on(lab, host):
    """A host lost by ``lose-site`` comes back (node.power_on) and serves again: a site's kube-apiserver ready and, in
    operator mode, its CNPG operator's pods running again; an LB host's sshd, HAProxy and the VIP. (the names of the
    processes started, seconds until it serves)."""
    since = time.time()
    started = node.power_on(lab, host)
    if host in lbhost.HOSTS:
        lbhost.wait_back(lab.state, host)
    elif _kube() is not None and "kube" in lab.state["sites"][host]:
        _kube().wait_back(lab.state["sites"][host]["kube"], since, lab.state.get("cnpg", {}).get("mode") == "operator")
    return started, round(time.time() - since, 1)
