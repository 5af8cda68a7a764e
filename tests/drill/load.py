"""A load client for the drill: writes and reads secrets through the global load balancer at a steady rate.

Every request is logged (start, end, operation, secret, HTTP status, serving site from ``X-KMS-Site``), so the
analysis can tell which acknowledged writes must survive and when the service was down. A write counts as
acknowledged only on HTTP 200: the KMS stand-in answers 200 after PostgreSQL committed the row (autocommit).
"""

from __future__ import annotations

import http.client
import json
import random
import ssl
import threading
import time
import urllib.parse

READY_LINE = "load on:"  # main's first line of output, once its threads run


class LoadClient:
    """``rate`` writes per second of new secrets plus as many reads of acknowledged ones, from two threads. An
    ``https`` URL is verified against ``ca_file`` (the lab CA)."""

    def __init__(self, url, rate=10.0, timeout=2.0, prefix="drill", ca_file=None):
        parsed = urllib.parse.urlsplit(url)
        self.host = parsed.hostname
        self.tls = ssl.create_default_context(cafile=ca_file) if parsed.scheme == "https" else None
        self.port = parsed.port or (443 if self.tls else 80)
        self.interval = 1.0 / rate
        self.timeout = timeout
        self.prefix = prefix
        self.records = []
        self.acked = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = []
        self.sequence = 0

    def request(self, method, path, body=None):
        """(HTTP status or 0 when no answer, serving site, parsed body or error text)."""
        if self.tls:
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self.tls)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=payload, headers={"Content-Type": "application/json"} if payload else {})
            resp = conn.getresponse()
            data = resp.read()
            try:
                parsed = json.loads(data or b"null")
            except ValueError:
                parsed = data.decode(errors="replace")
            return resp.status, resp.getheader("X-KMS-Site", ""), parsed
        except (OSError, http.client.HTTPException) as exc:
            return 0, "", str(exc)
        finally:
            conn.close()

    def record(self, op, name, started, status, site, detail=""):
        entry = {
            "t0": started,
            "t1": time.time(),
            "op": op,
            "name": name,
            "status": status,
            "site": site,
            "ok": status == 200,
        }
        if detail and status != 200:
            entry["detail"] = str(detail)[:200]
        with self.lock:
            self.records.append(entry)
        return entry

    def write_once(self):
        with self.lock:
            self.sequence += 1
            name = f"{self.prefix}-{self.sequence:07d}"
        value = f"v{random.getrandbits(48):012x}"
        started = time.time()
        status, site, body = self.request("POST", f"/api/v3/secrets/raw/{name}", {"secretValue": value})
        entry = self.record("write", name, started, status, site, body)
        if entry["ok"]:
            with self.lock:
                self.acked[name] = value
            entry["value"] = value

    def read_once(self):
        with self.lock:
            if not self.acked:
                return
            name = random.choice(list(self.acked))
            expected = self.acked[name]
        started = time.time()
        status, site, body = self.request("GET", f"/api/v3/secrets/raw/{name}")
        got = body.get("secret", {}).get("secretValue") if isinstance(body, dict) else None
        if status == 200 and got != expected:
            status = 409  # served, but a stale or wrong value: not a success
        self.record("read", name, started, status, site, body)

    def loop(self, action):
        next_at = time.monotonic()
        while not self.stopping.is_set():
            action()
            next_at += self.interval
            # A slow request must not turn into a burst afterwards: skip the missed slots.
            now = time.monotonic()
            if next_at < now:
                next_at = now
            self.stopping.wait(next_at - now)

    def start(self):
        for action in (self.write_once, self.read_once):
            thread = threading.Thread(target=self.loop, args=(action,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self):
        self.stopping.set()
        for thread in self.threads:
            thread.join(self.timeout + 5)
        with self.lock:
            return sorted(self.records, key=lambda r: r["t0"])


def write_records(path, records):
    """The records as JSON lines: one file format for the load client, the drills and their readers."""
    with open(path, "w", encoding="utf-8") as out:
        out.writelines(json.dumps(rec) + "\n" for rec in records)


def read_records(path):
    """The records ``write_records`` wrote to ``path``."""
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def main(argv=None):
    """``python -m tests.drill.load --url URL --out FILE``: run a LoadClient until SIGTERM or SIGINT, then write its
    records (JSON lines) to FILE. The partition drill starts it inside a site's network namespace, as that site's own
    clients (they reach its KMS directly, not through the global LB)."""
    import argparse  # pylint: disable=import-outside-toplevel
    import signal  # pylint: disable=import-outside-toplevel

    parser = argparse.ArgumentParser(prog="python -m tests.drill.load", description=main.__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--ca-file", help="the CA that verifies an https URL")
    parser.add_argument("--out", required=True)
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--prefix", default="local")
    parser.add_argument("--max-seconds", type=float, help="stop by itself after this long (a client left behind)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    client = LoadClient(args.url, rate=args.rate, prefix=args.prefix, ca_file=args.ca_file)
    client.start()
    print(f"{READY_LINE} {args.rate} writes/s + {args.rate} reads/s to {args.url}", flush=True)
    stop.wait(args.max_seconds)
    write_records(args.out, client.stop())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
