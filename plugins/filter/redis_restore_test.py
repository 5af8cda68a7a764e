# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jinja filter hanzo.kms.redis_restore_test_result (documented in redis_restore_test_result.yml)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.hanzo.kms.plugins.module_utils.redis_restore_test import failed_record, restore_test_record


def redis_restore_test_result(backup, restored=None, mode="local", target=None, check_mode=False, error=None):
    """The restore test's record of ``backup``: ``error`` makes it a failed one, else the restored keys decide."""
    if error:
        return failed_record(error, backup, mode, target)
    if not isinstance(backup, dict) or not backup.get("prefix"):
        raise AnsibleFilterError("hanzo.kms.redis_restore_test_result needs a backup of hanzo.kms.s3_backup_info")
    return restore_test_record(backup, restored, mode, target, check_mode)


class FilterModule:
    """hanzo.kms.redis_restore_test_result."""

    def filters(self):
        return {"redis_restore_test_result": redis_restore_test_result}
