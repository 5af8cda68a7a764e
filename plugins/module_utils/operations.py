# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The work of hanzo.kms.operation_report and hanzo.kms.switch_preflight as plain functions of their validated
parameters, with their argument specs: shared by each module (run on a host) and its action plugin (run in the
controller's process, plugin_utils/in_process.py).

Where the rest of the operations logic lives: operation_decisions.py (site summaries, the preflight go/no-go, the
data-loss bound, status findings; pure), operation_reports.py (status table, report Markdown/JSON, report files) and
site_data.py (what hanzo.kms.site_data_info and hanzo.kms.haproxy_info read).
"""

from __future__ import annotations

import json
import os

from ansible_collections.hanzo.kms.plugins.module_utils.module_run import ModuleFailure
from ansible_collections.hanzo.kms.plugins.module_utils.operation_decisions import preflight
from ansible_collections.hanzo.kms.plugins.module_utils.operation_reports import (
    dumps,
    parse_mode,
    render,
    update_report,
    write_report_file,
)

# hanzo.kms.operation_report: its argument spec and its work, for the module and its in-process action plugin.
REPORT_ARGUMENT_SPEC = dict(
    dir=dict(type="path"),
    name=dict(type="str"),
    operation=dict(type="str", required=True, choices=["failover", "switchover", "status"]),
    step=dict(type="str"),
    next_step=dict(type="str"),
    result=dict(type="str", default="running", choices=["running", "ok", "changed", "skipped", "failed"]),
    detail=dict(type="str"),
    data=dict(type="dict"),
    update=dict(type="dict"),
    sites=dict(type="list", elements="dict"),
    lb=dict(type="list", elements="dict"),
    snapshot=dict(type="str", default="current", choices=["before", "after", "current"]),
    finish=dict(type="str", choices=["succeeded", "failed"]),
    latest=dict(type="bool", default=True),
    mode=dict(type="raw", default="0600"),
)

REPORT_VALIDATION = dict(required_by=dict(dir=["name"]))


def run_report(params, check_mode=False):
    """Read the report ``params`` name (if any), apply the update, write its JSON and Markdown (and
    ``<operation>-latest``) unless ``check_mode``; the module's result. Raises ModuleFailure."""
    try:
        mode = parse_mode(params["mode"])
    except ValueError as exc:
        raise ModuleFailure(str(exc)) from exc
    report = {}
    json_path = md_path = None
    if params["dir"]:
        json_path = os.path.join(params["dir"], params["name"] + ".json")
        md_path = os.path.join(params["dir"], params["name"] + ".md")
        try:
            with open(json_path, encoding="utf-8") as handle:
                report = json.load(handle)
        except FileNotFoundError:
            report = {}
        except (OSError, ValueError) as exc:
            raise ModuleFailure(f"cannot read the report {json_path}: {exc}") from exc
    try:
        update_report(report, params)
    except ValueError as exc:
        raise ModuleFailure(str(exc)) from exc
    markdown = render(report)
    result = {"changed": False, "report": report, "markdown": markdown}
    if params["dir"]:
        result.update(json_path=json_path, markdown_path=md_path)
        if not check_mode:
            try:
                os.makedirs(params["dir"], exist_ok=True)
                text = dumps(report)
                written = [
                    path
                    for path, content in ((json_path, text), (md_path, markdown))
                    if write_report_file(path, content, mode)
                ]
                if params["latest"]:
                    base = os.path.join(params["dir"], params["operation"] + "-latest")
                    write_report_file(base + ".json", text, mode)
                    write_report_file(base + ".md", markdown, mode)
            except OSError as exc:
                raise ModuleFailure(f"cannot write the report in {params['dir']}: {exc}") from exc
            result["written"] = written
    return result


# hanzo.kms.switch_preflight: its argument spec and its work.
PREFLIGHT_ARGUMENT_SPEC = dict(
    mode=dict(type="str", required=True, choices=["failover", "switchover"]),
    target_site=dict(type="str", required=True),
    sites=dict(type="list", elements="dict", required=True),
    require_promoted=dict(type="bool", default=False),
    fail_on_refusal=dict(type="bool", default=True),
)


def run_preflight(params, check_mode=False):  # pylint: disable=unused-argument
    """Read-only, so the same in check mode. The go/no-go decision as the module returns it (``warnings_found``: the warnings, which the caller shows).
    Raises ModuleFailure with the decision when refused and ``fail_on_refusal``."""
    decision = preflight(
        params["mode"], params["target_site"], params["sites"], require_promoted=params["require_promoted"]
    )
    decision["warnings_found"] = decision.pop("warnings")
    if not decision["ok"] and params["fail_on_refusal"]:
        raise ModuleFailure(
            f"refusing the {params['mode']} to {params['target_site']}: " + "; ".join(decision["refusals"]), **decision
        )
    return dict(decision, changed=False)
