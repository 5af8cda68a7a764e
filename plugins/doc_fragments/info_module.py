# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations


class ModuleDocFragment:  # pylint: disable=too-few-public-methods
    # the check and diff mode of the collection's read-only (_info) modules
    DOCUMENTATION = r"""
attributes:
  check_mode:
    support: full
    description: Read-only; runs the same in check mode.
  diff_mode:
    support: none
    description: No diff is produced.
"""
