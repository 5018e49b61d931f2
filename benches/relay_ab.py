#!/usr/bin/env python3
"""A/B of relay binaries: flat-out relays of --messages readings at QoS 0,
the binaries taking turns (order reversed every other run) against one
broker of broker_bench.py's, median CPU seconds of the relay and received/s.
For comparing two builds of `fbp` (and the hand-written relay) where one
pass of broker_bench.py is too noisy to tell a few per cent apart:

    python3 benches/relay_ab.py --scheme nats --runs 16 \\
        before=/path/to/fbp-before after=target/release/fbp \\
        hand=target/release/examples/nats-relay-baseline

A NAME=PATH whose file name starts with `fbp` runs as `PATH relay IN OUT`
(anything else as `PATH IN OUT`, the hand-written relays' form); a wrapper
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
    ap.add_argument("--scheme", choices=["nats", "mqtt"], default="nats")
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
        src, dst, _ = bench.uris(args.scheme, port, 0)
        try:
            with open(os.path.join(d, "relays.log"), "wb") as log:
                for run in range(args.runs):
                    order = list(variants) if run % 2 == 0 else list(reversed(variants))
                    for name in order:
                        path = variants[name]
                        argv = bench.fbp_relay(src, dst, path) \
                            if os.path.basename(path).startswith("fbp") else [path, src, dst]
                        results[name].append(bench.relay_run(argv, src, dst, args.messages, 0, log))
        finally:
            brokers.close()
    print(f"{args.scheme}: {args.messages} messages at QoS 0, {args.runs} runs each; "
          f"load average after: {bench.loadavg()}")
    print("| relay | CPU s per run, median | received/s, median | runs that lost messages |")
    print("| --- | --- | --- | --- |")
    for name, rs in results.items():
        cpu = statistics.median(r["cpu_s"] for r in rs)
        rate = statistics.median(r["per_s"] for r in rs)
        lossy = [args.messages - r["received"] for r in rs if r["received"] < args.messages]
        print(f"| {name} | {cpu:.4f} | {rate:,.0f} | {len(lossy)} {lossy if lossy else ''} |")


if __name__ == "__main__":
    main()
