#!/usr/bin/env python3
r"""What the outbox table costs PostgreSQL, against logical-decoding messages.

Issue 13 names two ways for a service to hand its events to the relay in the transaction that
changes its state:

- the outbox table, as shipped (`platform/runtime/src/outbox.rs`): the writer inserts a row;
  the relay locks the unpublished rows in id order, publishes them and deletes them;
- a transactional logical-decoding message (`pg_logical_emit_message(true, ...)`), written to
  the WAL with the transaction and read by the relay from a replication slot (here through
  `pgoutput` with `messages`, by `pg_recvlogical`), with no table at all.

This measures PostgreSQL's side of each, at fixed rates, on one scratch database: the writers
are pgbench clients running a service-shaped transaction (`--events` state rows, each with one
event of 469 bytes of JSON), the relay keeps up at its own pace (the outbox's: `--relay-rounds`
rounds a second of the shipped relay's statements), and the CPU of every process involved is
read from /proc over the middle of each run. A third way writes the state rows alone, so each
way's own cost is the difference. It does not run the services: the broker's side (publishing
the events) is the same for both ways and is left out.

Two things the services' setting adds can be switched on: `--vacuum S` vacuums the outbox every
S seconds (the services' own vacuum comes at most once a minute), and `--other-slots N` reads N
slots of other, idle databases beside it: with a database per service on one server, every
relay's slot reads the whole server's WAL.

Needs `wal_level = logical` on the server (a restart), which orderflow does not otherwise
need; it refuses to run without it. For example:

    python3 scripts/outbox-vs-logical.py --rates 200,400,800 --events 10 --repeat 2
    python3 scripts/outbox-vs-logical.py --rates 400,800 --events 10 --other-slots 2 \
        --variants "state row only,logical message"

The machine should be otherwise idle. Prints one table; docs/performance.md section 49 has
the figures and what was decided.
"""

import argparse
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time

PG = ["-h", "127.0.0.1", "-U", "postgres"]
DB = "orderflow_outbox_experiment"
TICK = os.sysconf("SC_CLK_TCK")

PAYLOAD = (
    '{"type":"OrderCreated","event_id":"9b2f8e0c-4d7a-4c8e-9a51-7f3c2b1d0e6a",'
    '"order_id":"1f0c3a2b-5d6e-4f70-8a9b-0c1d2e3f4a5b","customer_id":"customer-000042",'
    '"items":[{"sku":"widget-0007","quantity":3,"unit_price":"19.99"}],'
    '"total":"59.97","currency":"EUR","occurred_at":"2026-12-06T21:30:00.123456Z",'
    '"schema_version":3,"trace":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",'
    '"attempt":1,"note":"a typical event of the order flow; this JSON text has 469 bytes."}'
)

# The platform's own migrations (the outbox, its quarantine, the dedup records), as every
# event-driven service's database has them, so the experiment cannot drift from them.
MIGRATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "migrations",
                          "platform")

# A service's state row: the order service's `orders`, narrowed.
SCHEMA = """
DROP TABLE IF EXISTS orders, outbox_quarantine, outbox, processed_events;
DROP PUBLICATION IF EXISTS orderflow_outbox_experiment;
CREATE PUBLICATION orderflow_outbox_experiment;
CREATE TABLE orders (
    order_id    UUID PRIMARY KEY,
    customer_id TEXT NOT NULL,
    status      TEXT NOT NULL,
    version     BIGINT NOT NULL,
    total       NUMERIC NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX orders_by_customer ON orders (customer_id, created_at);
"""


def schema():
    """Fresh tables: the state rows, then the platform's migrations in order."""
    psql(SCHEMA)
    for name in sorted(os.listdir(MIGRATIONS)):
        with open(os.path.join(MIGRATIONS, name)) as f:
            psql(f.read())


VARIANTS = ["state row only", "outbox table", "logical message"]


def transaction(variant, events):
    """A writer's transaction: `events` state rows, and one event for each in `variant`'s way."""
    n = events
    state = (
        "INSERT INTO orders (order_id, customer_id, status, version, total)\n"
        f"  SELECT gen_random_uuid(), 'customer-' || :c, 'PENDING', g, 59.97\n"
        f"  FROM generate_series(1, {n}) g;"
    )
    way = {
        "state row only": "",
        # Outbox::INSERT_ROWS: four arrays bound by the writer, each payload parsed as JSONB.
        "outbox table": (
            "INSERT INTO outbox (topic, event_key, payload, traceparent)\n"
            f"  SELECT * FROM UNNEST(array_fill('orders'::text, ARRAY[{n}]),\n"
            f"                       array_fill('customer-' || :c, ARRAY[{n}]),\n"
            f"                       array_fill('{PAYLOAD}'::text, ARRAY[{n}])::jsonb[],\n"
            f"                       array_fill('00-4bf9-00f0-01'::text, ARRAY[{n}]));"
        ),
        # One transactional message per event, its prefix the topic.
        "logical message": (
            f"SELECT pg_logical_emit_message(true, 'orders', '{PAYLOAD}')\n"
            f"  FROM generate_series(1, {n});"
        ),
    }[variant]
    return f"BEGIN;\n\\set c random(1, 100000)\n{state}\n{way}\nCOMMIT;\n"


# One relay round as the shipped relay's statements make it: Outbox::lock_unpublished (one walk
# of `outbox_unpublished` from its head, each row locked and its payload sent, here summed
# instead, as pgbench keeps no rows), then Outbox::acknowledged (Published::Deleted), a delete
# of the round's id range (the shipped statement also requires each id to be one the round
# read, `id = ANY($1)`, so that a row committed into the range after the read stays; here the
# range alone, at about the same cost). No broker: the relay's publishing is the same for both
# ways.
# `--relay-lock advisory` takes one transaction-level advisory lock instead of the row locks
# (a lever not in the services: another relay would wait on it as it waits on the first row).
def relay_round(lock):
    row_locks, advisory = {
        "rows": (" FOR UPDATE", ""),
        "advisory": ("", "SELECT pg_advisory_xact_lock(4242);\n"),
    }[lock]
    return f"""BEGIN;
{advisory}WITH locked AS (
  SELECT id, topic, event_key, payload, traceparent FROM outbox o
   WHERE published_at IS NULL
     AND NOT EXISTS (SELECT 1 FROM outbox_quarantine q
                     WHERE q.event_key = o.event_key AND q.outbox_id <= o.id)
   ORDER BY id LIMIT 2000{row_locks})
SELECT coalesce(min(id), 0) AS lo, coalesce(max(id), -1) AS hi,
       sum(length(payload::text) + length(topic) + length(event_key)) AS bytes
  FROM locked \\gset
DELETE FROM outbox WHERE id BETWEEN :lo AND :hi;
COMMIT;
"""


def psql(sql, db=DB):
    return subprocess.run(
        ["psql", *PG, "-d", db, "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
        check=True, capture_output=True, text=True,
    ).stdout.strip()


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (FileNotFoundError, ProcessLookupError):
        return None


def machine_busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / TICK


def processes(writer, relay):
    """pid -> group, for PostgreSQL's processes and the experiment's own clients."""
    roles = {}
    rows = psql(
        "SELECT pid, coalesce(application_name, ''), backend_type, coalesce(datname, '') "
        "FROM pg_stat_activity",
        db="postgres",
    )
    for line in rows.splitlines():
        pid, app, kind, db = line.split("|")
        if app == "orderflow-relay":
            roles[int(pid)] = "relay backend"
        elif app == "orderflow-vacuum":
            roles[int(pid)] = "vacuum backend"
        elif kind == "walsender" and db == DB:
            roles[int(pid)] = "relay backend"
        elif kind == "walsender":
            roles[int(pid)] = "other slots"
        elif kind == "client backend" and app == "pgbench":
            roles[int(pid)] = "writer backends"
    groups = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
        except FileNotFoundError:
            continue
        pid = int(pid)
        if pid in roles:
            groups[pid] = roles[pid]
        elif comm in ("postgres", "postmaster"):
            groups[pid] = "other PostgreSQL"
        elif pid == writer:
            groups[pid] = "writer client"
        elif pid == relay:
            groups[pid] = "relay client"
    return groups


def wal_bytes():
    return int(psql("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn", db="postgres"))


def start_slot(db):
    """A slot on `db` and a reader of it: what a service's relay would be, without the broker."""
    # Slot names are the server's, not a database's: each is named after its database.
    psql(f"SELECT pg_create_logical_replication_slot('{db}', 'pgoutput')", db=db)
    return subprocess.Popen(
        ["pg_recvlogical", *PG, "-d", db, "--slot", db, "--start", "-f", "/dev/null",
         "-o", "proto_version=1", "-o", "publication_names=orderflow_outbox_experiment",
         "-o", "messages=true", "-s", "1", "-F", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def pgbench(workdir, name, sql, clients, rate, seconds, app=None):
    """pgbench running `sql` (written to `name` in `workdir`) on the experiment's database at
    `rate` transactions a second for `seconds`, as `app` (its backends are found by it); its
    output is kept only for the writers (no `app`), whose figures are read from it."""
    script = os.path.join(workdir, name)
    with open(script, "w") as f:
        f.write(sql)
    kept = app is None
    return subprocess.Popen(
        ["pgbench", *PG, "-n", "-c", str(clients), "-j", str(min(clients, 2)), "-R", str(rate),
         "-T", str(seconds), "-f", script, DB],
        env={**os.environ, "PGAPPNAME": app or "pgbench"},
        stdout=subprocess.PIPE if kept else subprocess.DEVNULL,
        stderr=subprocess.STDOUT if kept else subprocess.DEVNULL, text=True,
    )


def run(variant, rate, args, other_dbs, workdir):
    seconds = args.seconds
    schema()
    psql("CHECKPOINT", db="postgres")
    relay = None
    vacuums = None
    if variant == "outbox table" and args.vacuum:
        vacuums = pgbench(workdir, "vacuum.sql", "VACUUM outbox;\n", 1, 1 / args.vacuum,
                          seconds + 5, app="orderflow-vacuum")
    if variant == "outbox table":
        # The shipped relay runs a round when a commit wakes it, or every 500 ms; under load
        # its rounds come 5 to 25 times a second (docs/performance.md).
        relay = pgbench(workdir, "relay.sql", relay_round(args.relay_lock), 1,
                        args.relay_rounds, seconds + 5, app="orderflow-relay")
    elif variant == "logical message":
        relay = start_slot(DB)
        others = [start_slot(db) for db in other_dbs]
    wal0 = wal_bytes()
    writer = pgbench(workdir, "writer.sql", transaction(variant, args.events), 8, rate, seconds)
    # Sample the middle of the run: after the clients connected, before they leave.
    time.sleep(5)
    groups = processes(writer.pid, relay.pid if relay else None)
    before = {pid: cpu_seconds(pid) for pid in groups}
    busy0, t0 = machine_busy(), time.monotonic()
    time.sleep(seconds - 10)
    after = {pid: cpu_seconds(pid) for pid in groups}
    busy1, t1 = machine_busy(), time.monotonic()
    out = writer.communicate()[0]
    wal = wal_bytes() - wal0
    span = t1 - t0
    cores = {}
    for pid, group in groups.items():
        if before[pid] is not None and after[pid] is not None:
            cores[group] = cores.get(group, 0.0) + (after[pid] - before[pid]) / span
    tps = float(re.search(r"tps = ([\d.]+)", out).group(1))
    lat = re.search(r"latency average = ([\d.]+) ms", out).group(1)
    behind = ""
    if variant == "outbox table":
        relay.wait()
        if vacuums:
            vacuums.wait()
        behind = psql("SELECT count(*) FROM outbox") + " rows left"
    elif variant == "logical message":
        time.sleep(2)
        behind = psql(
            f"SELECT pg_current_wal_lsn() - confirmed_flush_lsn FROM pg_replication_slots "
            f"WHERE slot_name = '{DB}'", db="postgres") + " bytes behind"
        for db, reader in [(DB, relay), *zip(other_dbs, others)]:
            reader.send_signal(signal.SIGINT)
            reader.wait()
            psql(f"SELECT pg_drop_replication_slot('{db}')", db=db)
    return {
        "tps": tps, "lat": lat, "cores": cores, "machine": (busy1 - busy0) / span,
        "wal": wal / max(tps * seconds, 1), "behind": behind,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="1000,2000,4000")
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--events", type=int, default=1, help="events per transaction")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--other-slots", type=int, default=0,
        help="slots of other databases on the same server, read beside the experiment's own "
        "(with a database per service, each relay's slot reads the whole server's WAL)")
    parser.add_argument("--relay-lock", choices=["rows", "advisory"], default="rows",
                        help="the outbox relay's lock: its rows (as shipped) or one advisory lock")
    parser.add_argument("--relay-rounds", type=float, default=20, help="outbox relay rounds a second")
    parser.add_argument(
        "--vacuum", type=float, default=0,
        help="vacuum the outbox every this many seconds (0: never, as between the services' "
        "own vacuums, which come at most once a minute)")
    args = parser.parse_args()
    if psql("SHOW wal_level", db="postgres") != "logical":
        sys.exit(
            "needs wal_level = logical: ALTER SYSTEM SET wal_level = logical, restart the "
            "server, and ALTER SYSTEM RESET wal_level (and restart) after"
        )
    other_dbs = [f"{DB}_other_{i}" for i in range(args.other_slots)]
    for db in [DB, *other_dbs]:
        subprocess.run(["dropdb", *PG, "--if-exists", "--force", db], check=True)
        subprocess.run(["createdb", *PG, db], check=True)
    for db in other_dbs:
        psql("CREATE PUBLICATION orderflow_outbox_experiment", db=db)
    with open("/proc/cpuinfo") as f:
        model = re.search(r"model name\s*: (.*)", f.read()).group(1)
    print(f"# {platform.node()}: {model}, {os.cpu_count()} CPUs; "
          f"PostgreSQL {psql('SHOW server_version', db='postgres')}; "
          f"synchronous_commit {psql('SHOW synchronous_commit', db='postgres')}; "
          f"{args.events} event(s) per transaction; "
          f"{args.other_slots} other databases' slots; "
          f"outbox relay rounds {args.relay_rounds:g}/s locking {args.relay_lock}, vacuumed "
          f"{f'every {args.vacuum:g} s' if args.vacuum else 'never'}; "
          f"{args.seconds} s a run, CPU over its middle {args.seconds - 10} s")
    groups = ["writer backends", "relay backend", "other slots", "vacuum backend",
              "other PostgreSQL",
              "writer client", "relay client"]
    print("| offered/s | way | achieved/s | latency ms | " + " | ".join(groups)
          + " | machine cores | PostgreSQL ms per transaction | WAL bytes per transaction | relay |")
    print("|" + " --- |" * (8 + len(groups)))
    with tempfile.TemporaryDirectory() as workdir:
        for rate in [int(r) for r in args.rates.split(",")]:
            for _ in range(args.repeat):
                for variant in args.variants.split(","):
                    r = run(variant, rate, args, other_dbs, workdir)
                    pg = sum(v for k, v in r["cores"].items() if not k.endswith("client"))
                    print(f"| {rate} | {variant} | {r['tps']:.1f} | {r['lat']} | "
                          + " | ".join(f"{r['cores'].get(g, 0.0):.3f}" for g in groups)
                          + f" | {r['machine']:.2f} | {1000 * pg / r['tps']:.3f} | "
                          f"{r['wal']:.0f} | {r['behind']} |", flush=True)
    for db in [DB, *other_dbs]:
        subprocess.run(["dropdb", *PG, "--if-exists", "--force", db], check=True)


if __name__ == "__main__":
    main()
