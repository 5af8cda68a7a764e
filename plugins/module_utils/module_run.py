# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A module's work as a plain function of its validated parameters, shared by the module (run on a host) and its
action plugin (run in the controller's process on the control node, plugin_utils/in_process.py)."""

from __future__ import annotations


class ModuleFailure(Exception):
    """The module fails with ``msg``; ``result`` holds the other return values."""

    def __init__(self, msg, **result):
        super().__init__(msg)
        self.msg = msg
        self.result = result


def not_positive(params, options):
    """The error for the first of ``options`` (durations, counts) that is not greater than 0, or None. Checked before
    a module changes anything: 0 or a negative timeout would fail later with a misleading error, or never wait."""
    for option in options:
        if params[option] is not None and params[option] <= 0:
            return f"{option} must be greater than 0, got {params[option]:g}"
    return None
