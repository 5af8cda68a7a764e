"""STAND-IN for the Hanzo KMS container, which cannot run here (no container engine, no image registry).

It is not the KMS. It reproduces only what the collection's failover depends on:
- configuration through the KMS's own environment variables (DB_CONNECTION_URI, REDIS_URL, HOST, PORT, SITE_URL);
  a ``rediss://`` REDIS_URL is verified with the CA file NODE_EXTRA_CA_CERTS names, as Node.js (the KMS) does;
- ``GET /api/status``: 200 only when its site's PostgreSQL accepts writes and its Redis answers PING, else 503
  (stricter than the real handler, which checks neither: see shared notes kms-app.md §4 — the lab uses it as the
  readiness gate the collection's playbooks should apply);
- a minimal secrets API stored in PostgreSQL (the source of truth) and cached in Redis:
  ``POST /api/v3/secrets/raw/<name>`` with ``{"secretValue": ...}`` and ``GET /api/v3/secrets/raw/<name>``;
- its schema is created at start ("migrations") and only when the database is writable, as the KMS does.
Every response carries ``X-KMS-Site`` so tests can see which data center served it.
In the stand-in lab it stands for the site's ingress as well: with KMS_STANDIN_TLS_CERT and KMS_STANDIN_TLS_KEY
it serves HTTPS with that certificate (one for the public host name, as the ingress serves), so the global load
balancer's verification of a site is real. The KMS container itself serves plain HTTP behind its ingress.

Run: ``python -m tests.lab.kms_standin`` with the environment above and KMS_SITE=<site>.
"""

from __future__ import annotations

import json
import os
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg2
import redis

SCHEMA = """
CREATE TABLE IF NOT EXISTS kms_secrets (
    name text PRIMARY KEY,
    value text NOT NULL,
    version integer NOT NULL DEFAULT 1,
    updated_at timestamptz NOT NULL DEFAULT now()
)"""
UPSERT = """
INSERT INTO kms_secrets (name, value) VALUES (%s, %s)
ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, version = kms_secrets.version + 1, updated_at = now()
RETURNING version"""
SECRET_PREFIX = "/api/v3/secrets/raw/"
CACHE_TTL = 300


class Backend:
    """Per-thread PostgreSQL connections and one Redis client; the schema is created once the DB is writable."""

    def __init__(self, dsn, redis_url):
        self.dsn = dsn
        tls = (
            {"ssl_ca_certs": os.environ["NODE_EXTRA_CA_CERTS"]}
            if (redis_url.startswith("rediss://") and os.environ.get("NODE_EXTRA_CA_CERTS"))
            else {}
        )
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=1, **tls)
        self.local = threading.local()
        self.schema_ready = False
        self.lock = threading.Lock()

    def conn(self):
        conn = getattr(self.local, "conn", None)
        if conn is None or conn.closed:
            conn = psycopg2.connect(self.dsn, connect_timeout=2)
            conn.autocommit = True
            self.local.conn = conn
        return conn

    def sql(self, statement, args=()):
        try:
            with self.conn().cursor() as cur:
                cur.execute(statement, args)
                return cur.fetchall() if cur.description else None
        except psycopg2.Error:
            # Drop the connection so the next request reconnects (the server may have been promoted or restarted).
            conn = getattr(self.local, "conn", None)
            if conn is not None:
                conn.close()
            raise

    def writable(self):
        return self.sql("SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'")[0][0]

    def ensure_schema(self):
        if not self.schema_ready:
            with self.lock:
                if not self.schema_ready and self.writable():
                    self.sql(SCHEMA)
                    self.schema_ready = True
        return self.schema_ready

    def status(self):
        problems = []
        try:
            if not self.writable():
                problems.append("database is read-only (standby)")
            elif not self.ensure_schema():
                problems.append("schema not ready")
        except psycopg2.Error as exc:
            problems.append(f"database unreachable: {str(exc).strip()}")
        try:
            self.redis.ping()
        except redis.RedisError as exc:
            problems.append(f"redis unreachable: {exc}")
        return problems


class Handler(BaseHTTPRequestHandler):
    server_version = "hanzo-kms-standin/1"
    backend: Backend = None
    site = ""

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        pass  # one line per request would dominate the log under load

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-KMS-Site", self.site)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # pylint: disable=invalid-name
        if self.path == "/api/status":
            problems = self.backend.status()
            body = {
                "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "site": self.site,
                "message": "Ok" if not problems else "; ".join(problems),
                "redisConfigured": True,
            }
            self.reply(200 if not problems else 503, body)
        elif self.path.startswith(SECRET_PREFIX):
            self.read_secret(self.path[len(SECRET_PREFIX) :])
        else:
            self.reply(404, {"message": "not found"})

    def do_POST(self):  # pylint: disable=invalid-name
        if not self.path.startswith(SECRET_PREFIX):
            self.reply(404, {"message": "not found"})
            return
        name = self.path[len(SECRET_PREFIX) :]
        try:
            length = int(self.headers.get("Content-Length", "0"))
            value = json.loads(self.rfile.read(length) or b"{}")["secretValue"]
        except (ValueError, KeyError, TypeError):
            self.reply(400, {"message": "body must be JSON with secretValue"})
            return
        try:
            if not self.backend.ensure_schema():
                self.reply(503, {"message": "database is read-only"})
                return
            version = self.backend.sql(UPSERT, (name, value))[0][0]
        except psycopg2.Error as exc:
            self.reply(503, {"message": f"database error: {str(exc).strip()}"})
            return
        try:
            self.backend.redis.set(f"secret:{name}", value, ex=CACHE_TTL)
        except redis.RedisError:
            pass  # the database holds the truth; a cold cache only costs a read
        self.reply(200, {"secret": {"secretKey": name, "secretValue": value, "version": version}})

    def read_secret(self, name):
        try:
            cached = self.backend.redis.get(f"secret:{name}")
        except redis.RedisError:
            cached = None
        if cached is not None:
            self.reply(200, {"secret": {"secretKey": name, "secretValue": cached.decode()}, "cache": "hit"})
            return
        try:
            rows = self.backend.sql("SELECT value FROM kms_secrets WHERE name = %s", (name,))
        except psycopg2.Error as exc:
            self.reply(503, {"message": f"database error: {str(exc).strip()}"})
            return
        if not rows:
            self.reply(404, {"message": f"secret {name} not found"})
            return
        try:
            self.backend.redis.set(f"secret:{name}", rows[0][0], ex=CACHE_TTL)
        except redis.RedisError:
            pass
        self.reply(200, {"secret": {"secretKey": name, "secretValue": rows[0][0]}, "cache": "miss"})


def main():
    Handler.backend = Backend(os.environ["DB_CONNECTION_URI"], os.environ["REDIS_URL"])
    Handler.site = os.environ.get("KMS_SITE", "")
    server = ThreadingHTTPServer((os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "8080"))), Handler)
    server.daemon_threads = True
    if os.environ.get("KMS_STANDIN_TLS_CERT"):
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(os.environ["KMS_STANDIN_TLS_CERT"], os.environ["KMS_STANDIN_TLS_KEY"])
        # the handshake in the request's thread, not in the accepting one (a slow client would hold every other)
        server.socket = tls.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    try:
        Handler.backend.ensure_schema()
    except psycopg2.Error:
        pass  # a standby or an unreachable database: serve 503 until it becomes writable
    server.serve_forever()


if __name__ == "__main__":
    main()
