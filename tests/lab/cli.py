"""``python -m tests.lab up|down|status [--dir DIR]``; ``kill --dir DIR NAME...`` stops recorded processes;
``lose-site --dir DIR HOST`` powers a site or an LB host off (every process of its namespace and containers at once;
an LB host's link is unplugged too); ``power-on --dir DIR HOST`` starts it again and waits until it serves (a
site's API and, in operator mode, its CNPG operator; an LB host's sshd, HAProxy and the VIP); ``cut``/``plug --dir DIR
HOST`` unplugs / plugs a site's or LB host's link to the lab network (a partition: everything keeps running)."""

from __future__ import annotations

import argparse
import sys

from tests.lab import lbhost, node, stack
from tests.lab.core import Lab, LabError


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tests.lab", description="The hanzo.kms lab of real servers.")
    parser.add_argument("command", choices=("up", "down", "status", "kill", "lose-site", "power-on", "cut", "plug"))
    parser.add_argument("--dir", help="lab directory (default: $HANZO_KMS_LAB_DIR or .lab in the checkout)")
    parser.add_argument(
        "names",
        nargs="*",
        help="kill: process names from the state file, e.g. dc1-kube-apiserver; "
        "lose-site, power-on, cut, plug: one host, e.g. dc1 or lb1",
    )
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
        elif args.command in ("lose-site", "power-on", "cut", "plug"):
            hosts = [*lab.state.get("sites", {}), *lbhost.HOSTS] if lab.load() is not None else []
            if len(args.names) != 1 or args.names[0] not in hosts:
                print(f"{args.command} needs a lab in {lab.dir} and one of its hosts ({', '.join(hosts) or 'none'})")
                return 1
            host = args.names[0]
            if args.command == "lose-site":
                lose = lbhost.lose_host if host in lbhost.HOSTS else node.lose_site
                print(f"{host}: {lose(lab.dir, host)} processes killed")
            elif args.command == "power-on":
                started, seconds = stack.power_on(lab, host)
                print(f"{host}: {len(started)} processes started, serving again after {seconds} s")
            else:
                node.set_link(lab.dir, host, up=args.command == "plug")
                print(f"{host}: link {'plugged' if args.command == 'plug' else 'unplugged'}")
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
