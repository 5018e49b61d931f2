#!/usr/bin/env python3
"""A/B of relay binaries: flat-out relays of --messages readings at QoS 0,
the binaries taking turns (order reversed every other run) against one
broker of broker_bench.py's, median CPU seconds of the relay and received/s.
For comparing two builds of `fbp` (and the hand-written relay) where one
pass of broker_bench.py is too noisy to tell a few per cent apart:

    python3 benches/relay_ab.py --scheme nats --runs 16 \\
        before=/path/to/fbp-before after=target/release/fbp \\
        hand=target/release/examples/nats-relay-baseline

With `--scheme sqlite`, MQTT -> SQLite as broker_bench.py runs it (`--messages`
readings into a fresh table per run; the hand-written loop is
target/release/examples/mqtt-sqlite-baseline):

    python3 benches/relay_ab.py --scheme sqlite --runs 6 --messages 100000 \\
        before=/path/to/fbp-before after=target/release/fbp \\
        hand=target/release/examples/mqtt-sqlite-baseline

A NAME=PATH whose file name starts with `fbp` runs as `PATH relay IN OUT`
(anything else as `PATH IN OUT`, the hand-written relays' form, or
`PATH IN DB TABLE 500` for SQLite); a wrapper
script named `fbp-*` can set environment variables, say
`TOKIO_WORKER_THREADS`. Build as broker_bench.py says.
"""
import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
import broker_bench as bench  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scheme", choices=["nats", "mqtt", "sqlite"], default="nats")
    ap.add_argument("--runs", type=int, default=16)
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("variants", nargs="+", metavar="NAME=PATH")
    args = ap.parse_args()
    variants = dict(v.split("=", 1) for v in args.variants)
    results = {name: [] for name in variants}
    print(f"load average before: {bench.loadavg()}")
    with tempfile.TemporaryDirectory() as d:
        brokers = bench.Brokers(d)
        port = brokers.nats if args.scheme == "nats" else brokers.mqtt
        src, dst, _ = bench.uris("mqtt" if args.scheme == "sqlite" else args.scheme, port, 0)
        try:
            with open(os.path.join(d, "relays.log"), "wb") as log:
                for run in range(args.runs):
                    order = list(variants) if run % 2 == 0 else list(reversed(variants))
                    for name in order:
                        results[name].append(one_run(args, variants[name], src, dst, d, log))
        finally:
            brokers.close()
    if args.scheme == "sqlite":
        results = {name: [dict(r, received=r["rows"]) for r in rs] for name, rs in results.items()}
    print(f"{args.scheme}: {args.messages} messages at QoS 0, {args.runs} runs each; "
          f"load average after: {bench.loadavg()}")
    print("| relay | CPU s per run, median | received (rows)/s, median | runs that lost messages |")
    print("| --- | --- | --- | --- |")
    for name, rs in results.items():
        cpu = statistics.median(r["cpu_s"] for r in rs)
        rate = statistics.median(r["per_s"] for r in rs)
        lossy = [args.messages - r["received"] for r in rs if r["received"] < args.messages]
        print(f"| {name} | {cpu:.4f} | {rate:,.0f} | {len(lossy)} {lossy if lossy else ''} |")


def one_run(args, path, src, dst, workdir, log):
    fbp = os.path.basename(path).startswith("fbp")
    if args.scheme != "sqlite":
        argv = bench.fbp_relay(src, dst, path) if fbp else [path, src, dst]
        return bench.relay_run(argv, src, dst, args.messages, 0, log)
    db = os.path.join(workdir, "ab.db")
    argv = bench.fbp_relay(src, f"sqlite://{db}?table=readings", path) if fbp else [path, src, db, "readings", "500"]
    try:
        return bench.sqlite_run(argv, db, src, args.messages, log)
    finally:
        os.remove(db)


if __name__ == "__main__":
    main()
