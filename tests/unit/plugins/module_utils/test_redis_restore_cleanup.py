# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Replication cleanup decisions (the states the integration tests cannot force on a real server) and the marker."""

from __future__ import annotations

from ansible_collections.hanzo.kms.plugins.module_utils import redis_restore
from ansible_collections.hanzo.kms.plugins.module_utils.redis_client import RedisError

LISTENER = "127.0.0.2:40001"


class FakeTarget:
    """A Target (redis-py's methods) answering INFO replication from ``state``; the commands named in ``failing``
    raise a connection error. ``calls`` records each command as its words."""

    retry_for = 1.0

    def __init__(self, state, failing=()):
        self.state = dict(state)
        self.failing = set(failing)
        self.calls = []

    def _command(self, *args):
        self.calls.append(args)
        if args[0] in self.failing:
            raise RedisError("connection to Redis at x failed while sending: [Errno 32] Broken pipe")

    def info(self, section):
        self._command("INFO", section)
        return {k: v for k, v in self.state.items() if v is not None}

    def config_set(self, name, value):
        self._command("CONFIG", "SET", name, value)
        return True

    def replicaof(self, *args):
        self._command("REPLICAOF", *args)
        if args == ("NO", "ONE"):
            self.state.update(role="master", master_host=None, master_port=None)
        else:
            self.state.update(role="slave", master_host=args[0], master_port=args[1])
        return b"OK"


def record(master=None):
    return {"listener": LISTENER, "masterauth": "old", "master": master, "sanitize": "no"}


def following_listener():
    return {"role": "slave", "master_host": "127.0.0.2", "master_port": "40001"}


def test_detach_puts_everything_back():
    target = FakeTarget(following_listener())
    assert redis_restore._detach(target, record()) == ("restored", [])  # pylint: disable=protected-access
    assert ("CONFIG", "SET", "masterauth", "old") in target.calls
    assert ("CONFIG", "SET", "sanitize-dump-payload", "no") in target.calls


def test_detach_reattaches_the_previous_master():
    target = FakeTarget(following_listener())
    state, problems = redis_restore._detach(target, record(["10.0.0.5", 6379]))  # pylint: disable=protected-access
    assert (state, problems) == ("restored_replica", [])
    assert target.calls.index(("CONFIG", "SET", "masterauth", "old")) < target.calls.index(
        ("REPLICAOF", "10.0.0.5", 6379)
    )


def test_detach_that_cannot_replicaof_no_one_keeps_the_marker_and_says_so():
    target = FakeTarget(following_listener(), failing={"REPLICAOF"})
    state, problems = redis_restore._detach(target, record())  # pylint: disable=protected-access
    assert state == "replica_of_listener"
    assert problems and "REPLICAOF NO ONE failed" in problems[0]
    # masterauth (the marker a re-run repairs from) is left in place
    assert not any(c[:3] == ("CONFIG", "SET", "masterauth") for c in target.calls)


def test_detach_with_an_unreachable_target_is_unknown():
    target = FakeTarget(following_listener(), failing={"REPLICAOF", "CONFIG", "INFO"})
    state, problems = redis_restore._detach(target, record())  # pylint: disable=protected-access
    assert state == "unknown" and len(problems) == 3


def test_marker_round_trip_and_foreign_values():
    value = redis_restore._encode_marker("tok", record(["h", 1]))  # pylint: disable=protected-access
    assert value.startswith(redis_restore.MARKER_PREFIX)
    assert redis_restore._decode_marker(value) == record(["h", 1])  # pylint: disable=protected-access
    assert redis_restore._decode_marker("an-operator-password") is None  # pylint: disable=protected-access
    assert redis_restore._decode_marker("") is None  # pylint: disable=protected-access
    assert redis_restore._decode_marker(redis_restore.MARKER_PREFIX + "garbage") == {}  # pylint: disable=protected-access


def test_detach_before_replicaof_only_puts_settings_back():
    """masterauth failed (e.g. NOPERM): a replica of a real master is not detached and re-attached (a full resync)."""
    target = FakeTarget({"role": "slave", "master_host": "10.0.0.5", "master_port": "6379"})
    state, problems = redis_restore._detach(target, record(["10.0.0.5", 6379]), attached=False)  # pylint: disable=protected-access
    assert (state, problems) == ("restored_replica", [])
    assert not any(c[0] == "REPLICAOF" for c in target.calls)
    assert ("CONFIG", "SET", "masterauth", "old") in target.calls
