"""Render the global_lb role's templates outside Ansible (for the lab and the tests).

``render(overrides, template)`` loads ``roles/global_lb/defaults/main.yml``, applies ``overrides`` and renders
``roles/global_lb/templates/<template>`` (haproxy.cfg.j2, keepalived.conf.j2) with the same Jinja settings as
``ansible.builtin.template`` (trim_blocks on, lstrip_blocks off). ``lab_values(...)`` gives the overrides the lab's
HAProxy pair needs, ``lab_keepalived_values(...)`` those of its keepalived pair.
"""

from __future__ import annotations

from pathlib import Path

import jinja2
import yaml

from ansible_collections.hanzo.kms.plugins.module_utils.global_lb import servers

ROLE_DIR = Path(__file__).resolve().parents[2] / "roles" / "global_lb"


def role_defaults():
    with open(ROLE_DIR / "defaults" / "main.yml", encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


def render(overrides=None, template="haproxy.cfg.j2"):
    """Return ``template``'s text for the role defaults updated with ``overrides`` (a dict of global_lb_* vars)."""
    values = role_defaults()
    values.update(overrides or {})
    unknown = sorted(key for key in (overrides or {}) if key not in values or not key.startswith("global_lb_"))
    if unknown:
        raise ValueError(f"not global_lb role variables: {', '.join(unknown)}")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(ROLE_DIR / "templates")),
        trim_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["hanzo.kms.global_lb_servers"] = servers  # the role's filter (plugins/filter/global_lb.py)
    values.setdefault(
        "ansible_managed", f"Rendered from roles/global_lb/templates/{template} by tests/lab/haproxy_render.py"
    )
    return env.get_template(template).render(**values)


def lab_values(instance, sites, active_site="dc1", extra_stats_sockets=None, check_interval="1s", public_host=""):
    """Overrides for one lab instance.

    ``instance``: dict with ``socket``, ``admin_port``, ``frontend_port``, ``stats_port``, ``state_file``
    (the keys tests/lab/haproxy.py already uses). ``sites``: {site name: (host, port)}, or (host, port, CA file) for a
    site that serves TLS, verified against ``public_host`` as the role does.
    Servers of sites other than ``active_site`` start in maintenance (``disabled``). ``instance["host"]``: the
    address it listens on (its LB host's; default loopback); ``instance["bind"]``: the frontend's bind, if not that;
    ``instance["frontend_tls_certificate"]``: TLS terminated on the frontend with it (else plain HTTP), and
    ``instance["redirect_bind"]`` redirects plain HTTP there.
    """
    host = instance.get("host", "127.0.0.1")
    admin = f"{host}:{instance['admin_port']}"
    admin_tls = "admin_tls_certificate" in instance  # an LB host: the TCP Runtime API only over TLS
    return {
        "global_lb_log_targets": ["stdout format raw local0 warning"],
        "global_lb_chroot": "",
        "global_lb_user": "",
        "global_lb_group": "",
        "global_lb_daemon": False,
        "global_lb_admin_socket": instance["socket"],
        "global_lb_admin_socket_mode": "600",
        "global_lb_admin_address": "" if admin_tls else admin,
        "global_lb_admin_tls_bind": admin if admin_tls else "",
        "global_lb_admin_tls_address": admin if admin_tls else "",
        "global_lb_admin_tls_certificate": instance.get("admin_tls_certificate", ""),
        "global_lb_admin_tls_client_ca_file": instance.get("admin_tls_client_ca_file", ""),
        "global_lb_admin_tls_socket": instance.get("admin_tls_socket", "/run/haproxy/admin-tls.sock"),
        "global_lb_extra_stats_sockets": list(extra_stats_sockets or []),
        "global_lb_server_state_file": instance["state_file"],
        "global_lb_tls_mode": "terminate" if instance.get("frontend_tls_certificate") else "none",
        "global_lb_tls_certificate": instance.get("frontend_tls_certificate", ""),
        "global_lb_redirect_bind_addresses": [instance["redirect_bind"]] if instance.get("redirect_bind") else [],
        "global_lb_bind_addresses": [instance.get("bind", f"{host}:{instance['frontend_port']}")],
        "global_lb_timeout_connect": "2s",
        "global_lb_timeout_client": "30s",
        "global_lb_timeout_server": "30s",
        "global_lb_check_interval": check_interval,
        "global_lb_check_fall": 2,
        "global_lb_check_rise": 1,
        "global_lb_public_host": public_host,
        "global_lb_sites": [
            dict(
                {
                    "name": name,
                    "address": site[0],
                    "port": site[1],
                    "initial_state": "ready" if name == active_site else "maint",
                },
                **({"tls": True, "ca_file": site[2]} if len(site) > 2 else {}),
            )
            for name, site in sites.items()
        ],
        "global_lb_prometheus_bind": f"{host}:{instance['stats_port']}",
        "global_lb_stats_uri": "/stats",
    }


def lab_keepalived_values(vip, priority, haproxy_pid, interface="eth0"):
    """Overrides for one lab LB host's keepalived: ``vip`` (address/prefix), its ``priority``, and its HAProxy master's
    pid for the check (the LB hosts share the machine's pid space, so ``pidof haproxy`` would see the other's)."""
    return {
        "global_lb_vip_address": vip,
        "global_lb_vip_interface": interface,
        "global_lb_vrrp_priority": priority,
        "global_lb_vrrp_check_script": f"/bin/kill -0 {haproxy_pid}",
    }
