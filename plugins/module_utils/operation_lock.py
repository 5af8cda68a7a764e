# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The operation lock of a hanzo.kms installation (issue 14, item 5), as plain Python.

One ``coordination.k8s.io/v1`` Lease per site (same name and namespace in every site), taken by failover, switchover,
backup, restore test and the Redis backup CronJob so that two of them never run at once:

- ``spec.holderIdentity`` is the owner (empty or absent: free), ``spec.acquireTime`` when it took the lock,
  ``spec.renewTime`` + ``spec.leaseDurationSeconds`` when it expires, ``spec.leaseTransitions`` counts owner changes;
  the annotation ``hanzo.kms/operation`` names the operation (failover, backup, ...).
- Sites are taken in a fixed order (sorted by site name) so that two racers meet at the same first Lease; every write
  is a create (fails with 409 AlreadyExists when someone else created it) or a replace carrying the resourceVersion
  that was read (fails with 409 Conflict when someone else wrote in between): two racers cannot both win.
- A site whose API does not answer is skipped when the caller allows it (a failover after losing a site), never a
  site that answers with a Lease held by someone else.
- An expired lock is taken over; a held one only with the confirmation ``BREAK LOCK <holder>``.
- A run may wait a bounded time for holders of named operations (the scheduled Redis backup Jobs, seconds long) to
  give the lock back; while it waits it holds nothing, so the holder is never blocked by the waiter.

The Redis backup CronJob does the same with kubectl (roles/redis/templates/operation-lock.sh.j2); the constants below
are its single definition (tests/unit/plugins/module_utils/test_operation_lock.py checks the script against them).
Nothing here imports Ansible; the Kubernetes client is only imported by :class:`KubeLease`.
"""

from __future__ import annotations

import time

from ansible_collections.hanzo.kms.plugins.module_utils.kube import request_timeout
from ansible_collections.hanzo.kms.plugins.module_utils.times import (
    MICROTIME_FORMAT,
    epoch_text,
    format_epoch,
    parse_epoch,
)

LEASE_NAME = "hanzo-kms-operation-lock"
LABELS = {
    "app.kubernetes.io/part-of": "hanzo-kms",
    "app.kubernetes.io/managed-by": "hanzo.kms",
    "app.kubernetes.io/component": "operation-lock",
}
OPERATION_ANNOTATION = "hanzo.kms/operation"
# The operation the Redis backup CronJob's Jobs record: short runs on a schedule, which the playbooks wait for.
REDIS_BACKUP_OPERATION = "redis-backup"
DEFAULT_TTL = 7200
BREAK_PHRASE = "BREAK LOCK {holder}"
# Attempts per site when a write conflicts (409): re-read and decide again each time.
ATTEMPTS = 5


class LockError(Exception):
    """The lock could not be taken or released; ``details`` go into the module's result."""

    def __init__(self, msg, **details):
        super().__init__(msg)
        self.msg = msg
        self.details = details


class Conflict(Exception):
    """A create found the Lease existing, or a replace found it changed since it was read (HTTP 409)."""


class Unreachable(Exception):
    """The site's Kubernetes API did not answer."""


# -- the pure decisions --------------------------------------------------------------------------------------------
def lease_view(lease):
    """What a Lease (a dict in the API's JSON shape, or None when absent) says about the lock."""
    if lease is None:
        return None
    meta = lease.get("metadata") or {}
    spec = lease.get("spec") or {}
    renewed = parse_epoch(spec.get("renewTime")) or parse_epoch(spec.get("acquireTime"))
    ttl = spec.get("leaseDurationSeconds")
    return {
        "holder": spec.get("holderIdentity") or "",
        "operation": (meta.get("annotations") or {}).get(OPERATION_ANNOTATION, ""),
        "since": parse_epoch(spec.get("acquireTime")),
        "renewed": renewed,
        "ttl": ttl,
        # A holder without a renew time or duration never expires by itself: only a break frees it.
        "expires": renewed + ttl if renewed is not None and ttl else None,
        "transitions": spec.get("leaseTransitions") or 0,
        "resource_version": meta.get("resourceVersion"),
    }


def decide(view, owner, now, break_confirmation=""):
    """How to take the lock given the Lease's ``view``: one of

    ``create`` (no Lease), ``take`` (free), ``renew`` (ours), ``take_expired`` (someone's, expired), ``break`` (someone's,
    with the right confirmation), ``refuse`` (someone's), ``refuse_break`` (someone's, wrong confirmation).
    """
    if view is None:
        return "create"
    if not view["holder"]:
        return "take"
    if view["holder"] == owner:
        return "renew"
    if view["expires"] is not None and view["expires"] <= now:
        return "take_expired"
    if break_confirmation:
        return "break" if break_confirmation == BREAK_PHRASE.format(holder=view["holder"]) else "refuse_break"
    return "refuse"


def decide_release(view, owner):
    """``none`` (no Lease or free: nothing to do), ``release`` (ours) or ``refuse`` (someone else's)."""
    if view is None or not view["holder"]:
        return "none"
    return "release" if view["holder"] == owner else "refuse"


def lease_body(name, namespace, view, owner, operation, ttl, now):
    """The Lease after taking (or renewing) the lock; carries the resourceVersion read, so a stale write fails."""
    renew = view is not None and view["holder"] == owner
    transitions = 0 if view is None else view["transitions"] + (0 if renew else 1)
    metadata = {
        "name": name,
        "namespace": namespace,
        "labels": dict(LABELS),
        "annotations": {OPERATION_ANNOTATION: operation},
    }
    if view is not None:
        metadata["resourceVersion"] = view["resource_version"]
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {
            "holderIdentity": owner,
            "acquireTime": format_epoch(view["since"] if renew and view["since"] else now, MICROTIME_FORMAT),
            "renewTime": format_epoch(now, MICROTIME_FORMAT),
            "leaseDurationSeconds": int(ttl),
            "leaseTransitions": transitions,
        },
    }


def released_body(name, namespace, view):
    """The Lease with no holder (kept, so the CronJob's Role needs no delete and the transitions count survives)."""
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(LABELS),
            "annotations": {},
            "resourceVersion": view["resource_version"],
        },
        "spec": {"leaseTransitions": view["transitions"]},
    }


def describe_holder(view, site):
    held = (
        f"The operation lock is held by '{view['holder']}'"
        + (f" ({view['operation']})" if view["operation"] else "")
        + f" since {epoch_text(view['since'])} in site {site}"
    )
    if view["expires"] is not None:
        held += f" (expires {epoch_text(view['expires'])} unless renewed)"
    else:
        held += " (no expiry)"
    return held


# -- the state machine over the sites ------------------------------------------------------------------------------
class OperationLock:  # pylint: disable=too-many-instance-attributes
    """Takes or releases the lock in every site. ``sites`` maps a site name to a store with get/create/replace.

    get() returns the Lease as a dict or None; create(body)/replace(body) raise :class:`Conflict` on 409 and
    :class:`Unreachable` when the API does not answer.
    """

    def __init__(
        self,
        sites,
        owner,
        operation="",
        ttl=DEFAULT_TTL,
        name=LEASE_NAME,
        break_confirmation="",
        allow_unreachable=False,
        check_mode=False,
        wait=0,
        wait_for=(),
        poll=2.0,
        clock=time.time,
        sleep=time.sleep,
    ):
        self.sites = dict(sorted(sites.items()))  # the fixed order: two racers meet at the same first Lease
        self.owner = owner
        self.operation = operation
        self.ttl = int(ttl)
        self.name = name
        self.break_confirmation = break_confirmation or ""
        self.allow_unreachable = allow_unreachable
        self.check_mode = check_mode
        self.wait = max(0.0, float(wait))
        self.wait_for = frozenset(wait_for)
        self.poll = poll
        self.clock = clock
        self.sleep = sleep

    def _result(self, state, sites):
        changed = any(
            s["action"] in ("created", "taken", "renewed", "taken_expired", "broken", "released")
            or s["action"].startswith("would_")
            for s in sites
        )
        return {
            "changed": changed,
            "state": state,
            "owner": self.owner,
            "lease": self.name,
            "sites": sites,
            "acquired_sites": [
                s["site"] for s in sites if s["action"] in ("created", "taken", "renewed", "taken_expired", "broken")
            ],
            "unreachable_sites": [s["site"] for s in sites if s["action"] == "unreachable"],
        }

    @staticmethod
    def _entry(site, action, view=None, error=None):
        entry = {"site": site, "action": action, "holder": "", "operation": "", "since": None, "expires": None}
        if view is not None:
            entry.update(
                holder=view["holder"],
                operation=view["operation"],
                since=epoch_text(view["since"]) if view["since"] else None,
                expires=epoch_text(view["expires"]) if view["expires"] else None,
            )
        if error:
            entry["error"] = error
        return entry

    def acquire(self):
        """Take the lock in every site; while a holder of a ``wait_for`` operation refuses it, try again every
        ``poll`` seconds for up to ``wait`` seconds (holding nothing meanwhile: a refused attempt gives back all)."""
        start = self.clock()
        waited_for = []
        while True:
            try:
                result = self._acquire_once()
            except LockError as exc:
                remaining = start + self.wait - self.clock()
                holder = exc.details.get("holder")
                waitable = exc.details.get("holder_operation") in self.wait_for and not self.break_confirmation
                if holder and waitable and holder not in waited_for:
                    waited_for.append(holder)
                if not (holder and waitable and remaining > 0):
                    if waited_for:
                        exc.msg = f"After waiting {self.clock() - start:.0f} s of at most {self.wait:.0f} s: {exc.msg}"
                        exc.details["waited_for"] = waited_for
                    raise
                self.sleep(min(self.poll, remaining))
                continue
            result["waited"] = round(self.clock() - start, 1) if waited_for else 0
            result["waited_for"] = waited_for
            return result

    def _acquire_once(self):
        done, taken = [], []
        for site, store in self.sites.items():
            try:
                entry = self._acquire_site(site, store)
            except LockError as exc:
                # Give back what this run took in the sites before: a refused run holds nothing.
                self._rollback(taken)
                exc.details.setdefault("sites", done + [exc.details.pop("entry", self._entry(site, "refused"))])
                raise
            done.append(entry)
            if entry["action"] in ("created", "taken", "taken_expired", "broken"):
                taken.append(site)
        unreachable = [e for e in done if e["action"] == "unreachable"]
        if unreachable and not self.allow_unreachable:
            self._rollback(taken)
            raise LockError(
                "cannot take the operation lock: the Kubernetes API of "
                + ", ".join(f"{e['site']} ({e['error']})" for e in unreachable)
                + " did not answer (only a failover proceeds without a lost site)",
                sites=done,
            )
        if len(unreachable) == len(done):
            raise LockError("cannot take the operation lock: no site's Kubernetes API answered", sites=done)
        return self._result("acquired", done)

    def _acquire_site(self, site, store):
        for dummy in range(ATTEMPTS):
            try:
                view = lease_view(store.get())
            except Unreachable as exc:
                return self._entry(site, "unreachable", error=str(exc))
            now = self.clock()
            action = decide(view, self.owner, now, self.break_confirmation)
            if action in ("refuse", "refuse_break"):
                msg = describe_holder(view, site) + "."
                if action == "refuse_break":
                    msg += (
                        f" The break confirmation does not match: it must be exactly "
                        f"'{BREAK_PHRASE.format(holder=view['holder'])}'."
                    )
                else:
                    msg += (
                        " Wait for that run to finish; if it crashed, wait for the expiry or break the lock with "
                        f"-e \"kms_lock_break='{BREAK_PHRASE.format(holder=view['holder'])}'\"."
                    )
                raise LockError(
                    msg,
                    holder=view["holder"],
                    holder_operation=view["operation"],
                    since=epoch_text(view["since"]),
                    site=site,
                    entry=self._entry(site, "refused", view),
                )
            done = {
                "create": "created",
                "take": "taken",
                "renew": "renewed",
                "take_expired": "taken_expired",
                "break": "broken",
            }[action]
            if self.check_mode:
                return self._entry(site, "would_" + action, view)
            body = lease_body(self.name, store.namespace, view, self.owner, self.operation, self.ttl, now)
            try:
                if view is None:
                    store.create(body)
                else:
                    store.replace(body)
            except Conflict:
                continue  # someone else wrote first: read again and decide on what they wrote
            except Unreachable as exc:
                return self._entry(site, "unreachable", error=str(exc))
            return self._entry(site, done, view)
        raise LockError(f"the operation lock in site {site} changed on every one of {ATTEMPTS} attempts", site=site)

    def _rollback(self, sites):
        for site in sites:
            try:
                self._release_site(site, self.sites[site])
            except (LockError, Unreachable, Conflict):
                pass  # best effort: the lock then expires after its ttl

    def release(self):
        done, refused = [], []
        for site, store in self.sites.items():
            try:
                entry = self._release_site(site, store)
            except Unreachable as exc:
                entry = self._entry(site, "unreachable", error=str(exc))
            done.append(entry)
            if entry["action"] == "refused":
                refused.append(entry)
        if refused:
            raise LockError(
                "refusing to release the operation lock of another run: "
                + "; ".join(
                    f"site {e['site']} is held by '{e['holder']}' since {e['since']}, not by '{self.owner}'"
                    for e in refused
                ),
                sites=done,
                holder=refused[0]["holder"],
            )
        return self._result("released", done)

    def _release_site(self, site, store):
        for dummy in range(ATTEMPTS):
            view = lease_view(store.get())
            action = decide_release(view, self.owner)
            if action == "none":
                return self._entry(site, "unchanged", view)
            if action == "refuse":
                return self._entry(site, "refused", view)
            if self.check_mode:
                return self._entry(site, "would_release", view)
            try:
                store.replace(released_body(self.name, store.namespace, view))
            except Conflict:
                continue
            return self._entry(site, "released", view)
        raise LockError(f"the operation lock in site {site} changed on every one of {ATTEMPTS} attempts", site=site)


# -- Kubernetes access ---------------------------------------------------------------------------------------------
class KubeLease:
    """The lock's Lease in one site, behind a ``kubernetes.client.ApiClient``."""

    def __init__(self, api_client, namespace, name=LEASE_NAME, request_timeout=10):
        from kubernetes import client  # pylint: disable=import-outside-toplevel

        self.api = client.CoordinationV1Api(api_client)
        self.client = api_client
        self.namespace = namespace
        self.name = name
        self.request_timeout = request_timeout
        self.endpoint = getattr(getattr(api_client, "configuration", None), "host", None)

    def _call(self, func, *args, reading=False, **kwargs):
        from kubernetes.client.rest import ApiException  # pylint: disable=import-outside-toplevel

        try:
            return func(*args, _request_timeout=request_timeout(self.request_timeout), **kwargs)
        except ApiException as exc:
            # 409: created or changed by someone else since it was read; 404 on a write: deleted since it was read.
            # Both mean "read again and decide again".
            if exc.status == 409 or (exc.status == 404 and not reading):
                raise Conflict(str(exc.reason)) from None
            if exc.status == 404:
                return None
            raise LockError(
                f"Lease {self.namespace}/{self.name} at {self.endpoint}: HTTP {exc.status} "
                f"{exc.reason}: {(exc.body or '')[:300]}"
            ) from None
        except Exception as exc:  # pylint: disable=broad-exception-caught
            # urllib3 MaxRetryError / timeouts / TLS and connection errors: the API server did not answer
            raise Unreachable(f"{self.endpoint}: {type(exc).__name__}: {exc}") from None

    def get(self):
        # _preload_content=False keeps the API's JSON (MicroTime strings, camelCase) instead of client models.
        import json  # pylint: disable=import-outside-toplevel

        resp = self._call(
            self.api.read_namespaced_lease, self.name, self.namespace, reading=True, _preload_content=False
        )
        return None if resp is None else json.loads(resp.data)

    def create(self, body):
        self._call(self.api.create_namespaced_lease, self.namespace, body, _preload_content=False)

    def replace(self, body):
        self._call(self.api.replace_namespaced_lease, self.name, self.namespace, body, _preload_content=False)
