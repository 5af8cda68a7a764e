"""Render the global_lb role's haproxy.cfg template outside Ansible (for the lab and the tests).

``render(overrides)`` loads ``roles/global_lb/defaults/main.yml``, applies ``overrides`` and renders
``roles/global_lb/templates/haproxy.cfg.j2`` with the same Jinja settings as ``ansible.builtin.template``
(trim_blocks on, lstrip_blocks off). ``lab_values(...)`` gives the overrides the lab's HAProxy pair needs.
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


def render(overrides=None):
    """Return haproxy.cfg text for the role defaults updated with ``overrides`` (a dict of global_lb_* vars)."""
    values = role_defaults()
    values.update(overrides or {})
    unknown = sorted(key for key in (overrides or {}) if key not in values or not key.startswith("global_lb_"))
    if unknown:
        raise ValueError(f"not global_lb role variables: {', '.join(unknown)}")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(ROLE_DIR / "templates")), trim_blocks=True,
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    env.filters["hanzo.kms.global_lb_servers"] = servers  # the role's filter (plugins/filter/global_lb.py)
    values.setdefault("ansible_managed", "Rendered from roles/global_lb/templates/haproxy.cfg.j2 by tests/lab/haproxy_render.py")
    return env.get_template("haproxy.cfg.j2").render(**values)


def lab_values(instance, sites, active_site="dc1", extra_stats_sockets=None, check_interval="1s"):
    """Overrides for one lab instance.

    ``instance``: dict with ``socket``, ``admin_port``, ``frontend_port``, ``stats_port``, ``state_file``
    (the keys tests/lab/haproxy.py already uses). ``sites``: {site name: (host, port)}.
    Servers of sites other than ``active_site`` start in maintenance (``disabled``).
    """
    return {
        "global_lb_log_targets": ["stdout format raw local0 warning"],
        "global_lb_chroot": "",
        "global_lb_user": "",
        "global_lb_group": "",
        "global_lb_daemon": False,
        "global_lb_admin_socket": instance["socket"],
        "global_lb_admin_socket_mode": "600",
        "global_lb_admin_address": f"127.0.0.1:{instance['admin_port']}",
        "global_lb_extra_stats_sockets": list(extra_stats_sockets or []),
        "global_lb_server_state_file": instance["state_file"],
        "global_lb_tls_mode": "none",
        "global_lb_bind_addresses": [f"127.0.0.1:{instance['frontend_port']}"],
        "global_lb_timeout_connect": "2s",
        "global_lb_timeout_client": "30s",
        "global_lb_timeout_server": "30s",
        "global_lb_check_interval": check_interval,
        "global_lb_check_fall": 2,
        "global_lb_check_rise": 1,
        "global_lb_sites": [
            {"name": name, "address": host, "port": port, "initial_state": "ready" if name == active_site else "maint"}
            for name, (host, port) in sites.items()],
        "global_lb_prometheus_bind": f"127.0.0.1:{instance['stats_port']}",
        "global_lb_stats_uri": "/stats",
    }
