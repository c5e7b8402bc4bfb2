#!/usr/bin/env python3
"""Context switches over a window, by process and by thread name (docs/performance.md, 29).

    scripts/context-switches.py SECONDS [ORDERS]

Reads every thread's voluntary and involuntary switch counts from /proc before and after the
window and prints the difference per second (and per order, given the orders the window
held), grouped by process under the names the bench's CPU report uses (dev/src/bench/cpu.rs,
`component`): the broker, each `orderflow serve <name>` component, PostgreSQL (its backends
also per database, as `pg:<database>`), and anything else running under its program's name.
Run it beside `./orderflow bench --no-up` while a fixed-rate run offers load.
"""
import collections
import os
import re
import sys
import time


def process_name(pid):
    try:
        argv = [a.decode(errors="replace") for a in open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0") if a]
    except OSError:
        return None
    if not argv:
        return None  # a kernel thread
    if argv[0].startswith("postgres:"):
        # "postgres: 15/main: <user> <database> <client> <state>", or a background process.
        backend = re.match(r"postgres: [^:]+: (\S+) (\S+) ", argv[0])
        return "pg:" + backend.group(2) if backend else "pg:" + argv[0].split(":", 2)[2].strip()
    exe = os.path.basename(argv[0])
    if exe.endswith("tansu"):
        return "broker"
    if exe == "orderflow" and len(argv) > 2 and argv[1] == "serve":
        return argv[2]
    if exe == "orderflow-dev" and argv[1:2] == ["bench"]:
        return "load generator"
    return exe


def counts():
    """(process, thread name, tid) -> switches so far."""
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        name = process_name(pid)
        if name is None:
            continue
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                status = open(f"/proc/{pid}/task/{tid}/status").read()
                thread = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
            except OSError:
                continue  # the thread ended
            switches = sum(int(n) for n in re.findall(r"^(?:non)?voluntary_ctxt_switches:\s+(\d+)", status, re.M))
            out[(name, re.sub(r"\d+$", "#", thread), tid)] = switches
    return out


def main():
    seconds = float(sys.argv[1])
    orders = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    before = counts()
    time.sleep(seconds)
    after = counts()
    by_process, by_thread = collections.Counter(), collections.Counter()
    for key, n in after.items():
        delta = n - before.get(key, 0)  # a thread born in the window counts from zero
        group = "postgres" if key[0].startswith("pg:") else key[0]
        by_process[group] += delta
        by_thread[(key[0], key[1])] += delta

    def rate(n):
        return f"{n / seconds:8.0f}/s" + (f" {n / orders:7.1f}/order" if orders else "")

    print(f"all processes {rate(sum(by_process.values()))}")
    for name, n in by_process.most_common(15):
        print(f"  {name:30} {rate(n)}")
    print("by thread:")
    for (name, thread), n in by_thread.most_common(25):
        print(f"  {name:30} {thread:18} {rate(n)}")


if __name__ == "__main__":
    main()
