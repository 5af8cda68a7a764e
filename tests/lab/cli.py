"""``python -m tests.lab up|down|status [--dir DIR]``; ``kill --dir DIR NAME...`` stops recorded processes;
``lose-site --dir DIR SITE`` powers a site off (every process of its node, control plane and pods, at once)."""
from __future__ import annotations

import argparse
import sys

from tests.lab import node, stack
from tests.lab.core import Lab, LabError


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tests.lab", description="The hanzo.kms lab of real servers.")
    parser.add_argument("command", choices=("up", "down", "status", "kill", "lose-site"))
    parser.add_argument("--dir", help="lab directory (default: $HANZO_KMS_LAB_DIR or .lab in the checkout)")
    parser.add_argument("names", nargs="*", help="kill: process names from the state file, e.g. dc1-kube-apiserver; "
                                                 "lose-site: one site, e.g. dc1")
    args = parser.parse_intermixed_args(argv)
    lab = Lab(args.dir)
    try:
        if args.command == "up":
            stack.up(lab)
        elif args.command == "down":
            stack.down(lab)
        elif args.command == "kill":
            # Simulates losing part of a site (failover tests); 'up' afterwards rebuilds the whole lab.
            if lab.load() is None:
                print(f"no lab in {lab.dir}")
                return 1
            for name in args.names:
                stopped = lab.stop_process(lab.process(name))
                print(f"{name}: {'stopped' if stopped else 'was not running'}")
        elif args.command == "lose-site":
            if lab.load() is None or len(args.names) != 1 or args.names[0] not in lab.state.get("sites", {}):
                print(f"lose-site needs a lab in {lab.dir} and one of its sites")
                return 1
            print(f"{args.names[0]}: {node.lose_site(lab.dir, args.names[0])} processes killed")
        else:
            if lab.load() is None:
                print(f"no lab in {lab.dir} (run: make lab-up)")
                return 1
            rows = stack.status(lab)
            width = max(len(row[0]) for row in rows)
            for name, ok, detail in rows:
                print(f"{'ok  ' if ok else 'DOWN'}  {name:<{width}}  {detail}")
            down = [name for name, ok, dummy in rows if not ok]
            print(f"{len(rows) - len(down)}/{len(rows)} healthy" + (f"; down: {', '.join(down)}" if down else ""))
            return 1 if down else 0
    except LabError as exc:
        print(f"lab error: {exc}", file=sys.stderr)
        return 2
    return 0
