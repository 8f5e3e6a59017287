"""Print the KQL that sentinel.bicep / monitor.bicep would deploy, for given parameters.

Paste the output into the workspace's Logs blade before deploying, to see which rows (and which
IPs) the rule would produce on your own data. Needs the validation venv (pycep):

    .venv/bin/python infra/tools/render_kql.py --firewall-table CommonSecurityLog --source-ip-column SourceIP
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bicep_eval import Evaluator, parse_file

INFRA = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--template", choices=["sentinel", "monitor"], default="sentinel")
    parser.add_argument("--firewall-table", default=None)
    parser.add_argument("--source-ip-column", default=None)
    parser.add_argument("--legacy-ti-table", action="store_true")
    parser.add_argument("--block-for", default=None, help="ISO-8601 duration, e.g. P7D")
    args = parser.parse_args(argv)

    params = {"workspaceName": "ws", "functionAppName": "app", "keyVaultName": "kv"}
    if args.firewall_table:
        params["firewallTable"] = args.firewall_table
    if args.source_ip_column:
        params["sourceIpColumn"] = args.source_ip_column
    if args.legacy_ti_table:
        params["useLegacyThreatIntelTable"] = True
    if args.block_for:
        params["blockFor"] = args.block_for

    template = Evaluator(parse_file(INFRA / f"{args.template}.bicep"), params)
    module = Evaluator(parse_file(INFRA / "modules" / "ti-ip-match-query.bicep"),
                       template.module_params("tiQuery"))
    print(module.output("query"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
