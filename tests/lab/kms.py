"""Lab component that runs the KMS stand-in (tests/lab/kms_standin.py) for one site."""

from __future__ import annotations

import ssl
import sys
import urllib.error
import urllib.request
from urllib.parse import quote

from tests.lab.core import REPO_ROOT


def http_status(url, timeout=2.0, ca_file=None):
    """(status code, body) of a GET (an https URL verified with ``ca_file``); status 0 when the server does not
    answer."""
    context = ssl.create_default_context(cafile=ca_file) if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:  # noqa: S310 - the lab's URL
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)


def up(lab, site, postgres, redis_entry, host="127.0.0.1", tls=None):
    """``host``: the address it listens on (the LB hosts' gateway, so the LB hosts reach it). ``tls``: serve HTTPS
    as the site's ingress does (``cert_file``, ``key_file``, ``ca_file``: tests/lab/pki.issue_server's, and the lab
    CA that verifies it)."""
    port = lab.free_port()
    dsn = (
        f"postgresql://{postgres['user']}:{quote(postgres['password'])}@{postgres['host']}:{postgres['port']}/"
        f"{postgres['database']}"
    )
    scheme = "rediss" if redis_entry.get("ca_file") else "redis"
    env = {
        "DB_CONNECTION_URI": dsn,
        "REDIS_URL": f"{scheme}://default:{quote(redis_entry['password'])}@{redis_entry['host']}:{redis_entry['port']}",
        "HOST": host,
        "PORT": str(port),
        "SITE_URL": f"http://{host}:{port}",
        "KMS_SITE": site,
        "PYTHONPATH": str(REPO_ROOT),
    }
    if redis_entry.get("ca_file"):
        env["NODE_EXTRA_CA_CERTS"] = redis_entry["ca_file"]
    if tls:
        env.update(KMS_STANDIN_TLS_CERT=tls["cert_file"], KMS_STANDIN_TLS_KEY=tls["key_file"])
    name = f"{site}-kms"
    lab.spawn(name, [sys.executable, "-m", "tests.lab.kms_standin"], env=env, cwd=REPO_ROOT)
    entry = {"url": f"{'https' if tls else 'http'}://{host}:{port}", "host": host, "port": port, "stand_in": True}
    if tls:
        entry["ca_file"] = tls["ca_file"]
    # Any HTTP answer means it serves; 503 is the expected answer of the passive site (read-only database).
    lab.wait_process(
        name,
        lambda: http_status(entry["url"] + "/api/status", ca_file=tls and tls["ca_file"])[0] in (200, 503),
        20,
        f"{name} to answer HTTP on port {port}",
    )
    return entry


def check(entry):
    """Up means it answers HTTP; a 503 is the passive site's normal answer and is reported, not failed."""
    code, body = http_status(entry["url"] + "/api/status", ca_file=entry.get("ca_file"))
    if code == 0:
        return False, f"{entry['url']} does not answer: {body}"
    return True, f"{entry['url']} /api/status {code}{' (ready)' if code == 200 else ': ' + body}"
