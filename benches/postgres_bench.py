#!/usr/bin/env python3
"""Rows/s into PostgreSQL: fbp against a hand-written tokio-postgres loop,
side by side in one run (cases interleaved). Run from the repository root
after `cargo build --release --bin fbp --example pg_batched`, with a
PostgreSQL on 127.0.0.1:5432 (trust auth, user postgres, database test):

    python3 benches/postgres_bench.py [--rows 100000] [--row-rows 10000] [--runs 5]

Every case inserts the same JSON lines `{"n": .., "sensor": .., "value": ..}`
into a fresh table `(n BIGINT, sensor TEXT, value DOUBLE PRECISION)`:

- fbp:      `file-read -> postgres` (batch_size 500), the whole process
- batched:  benches/baseline/pg_batched.rs: the file parsed with serde_json,
            one multi-row INSERT of 500 rows with typed parameters per batch
- row:      the same program inserting one row at a time (each its own
            commit), over `--row-rows` rows (it is slow)

Prints the median wall time and rows/s of each and the ratio fbp / batched;
docs/BENCHMARKS.md records them with this command.
"""
import argparse
import os
import statistics
import subprocess
import tempfile
import time

TARGET = os.environ.get("CARGO_TARGET_DIR", "target")
FBP = os.environ.get("FBP", os.path.join(TARGET, "release", "fbp"))
BASELINE = os.environ.get("BASELINE", os.path.join(TARGET, "release", "examples", "pg_batched"))
URL = "postgresql://postgres@127.0.0.1:5432/test"
TABLE = "fbp_bench_rows"

FLOW = """
[flow]
connections = ["read -> store"]

[components.read]
type = "file-read"
config = {{ path = "{path}" }}

[components.store]
type = "postgres"
config = {{ url = "{url}", table = "{table}", batch_size = 500 }}
"""


def psql(sql):
    out = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-Atqc", sql],
        check=True, capture_output=True, text=True,
    )
    return out.stdout.strip()


def fresh_table():
    psql(f"DROP TABLE IF EXISTS {TABLE}; CREATE TABLE {TABLE} (n BIGINT, sensor TEXT, value DOUBLE PRECISION)")


def timed(cmd, rows):
    fresh_table()
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    got = int(psql(f"SELECT count(DISTINCT n) FROM {TABLE}"))
    assert got == rows, f"{cmd[0]}: {got} rows of {rows}"
    return elapsed


def write_rows(path, n):
    with open(path, "w") as f:
        for i in range(n):
            f.write(f'{{"n": {i}, "sensor": "sensor-{i % 16}", "value": {i % 1000}.25}}\n')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--row-rows", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        big, small = os.path.join(d, "rows.jsonl"), os.path.join(d, "few.jsonl")
        write_rows(big, args.rows)
        write_rows(small, args.row_rows)
        flow = os.path.join(d, "flow.toml")
        with open(flow, "w") as f:
            f.write(FLOW.format(path=big, url=URL, table=TABLE))
        cases = {
            "fbp: file-read -> postgres": ([FBP, "--log-level", "error", "run", flow], args.rows),
            "batched tokio-postgres loop": ([BASELINE, URL, TABLE, big, "batched", "500"], args.rows),
            "row at a time": ([BASELINE, URL, TABLE, small, "row"], args.row_rows),
        }
        times = {name: [] for name in cases}
        for _ in range(args.runs):
            for name, (cmd, rows) in cases.items():
                times[name].append(timed(cmd, rows))
        psql(f"DROP TABLE IF EXISTS {TABLE}")
    rate = {}
    print(f"{'case':32} {'rows':>8} {'median wall':>12} {'rows/s':>10}")
    for name, (cmd, rows) in cases.items():
        med = statistics.median(times[name])
        rate[name] = rows / med
        print(f"{name:32} {rows:>8} {med * 1000:>10.0f}ms {rate[name]:>10.0f}")
    fbp, batched = rate["fbp: file-read -> postgres"], rate["batched tokio-postgres loop"]
    print(f"fbp / batched loop: {fbp / batched:.2f}")


if __name__ == "__main__":
    main()
