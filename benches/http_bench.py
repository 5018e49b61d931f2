#!/usr/bin/env python3
"""Webhook ingest, whole process: requests/s of `http-listen -> null` against a
hand-written axum handler doing the same work (parse the JSON body, hand it to a
bounded channel, answer 200; benches/baseline/http_ingest.rs), side by side in
one run, with the same load generator. Run from the repository root:

    cargo build --release --bin fbp --example http_ingest
    python3 benches/http_bench.py [--runs 5] [--duration 5] [--connections 50]

The load generator is `wrk` when installed (a POST with a small JSON body over
keep-alive connections), else a Python asyncio client over raw sockets
(keep-alive, one request in flight per connection). Prints the median of the
runs for each server; docs/BENCHMARKS.md records them with this command.
"""
import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time

TARGET = os.environ.get("CARGO_TARGET_DIR", "target")
FBP = os.environ.get("FBP", os.path.join(TARGET, "release", "fbp"))
BASELINE = os.path.join(TARGET, "release", "examples", "http_ingest")
BODY = b'{"sensor": "sensor-1", "value": 23.4, "unit": "C", "ts": "2026-01-01T00:00:00Z"}'


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, limit=15):
    end = time.time() + limit
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def start_fbp(port, respond, workdir):
    flow = os.path.join(workdir, f"ingest-{respond}.toml")
    with open(flow, "w") as f:
        f.write(
            '[flow]\nname = "ingest"\nconnections = ["hooks -> sink"]\n'
            f'[components.hooks]\ntype = "http-listen"\n'
            f'config = {{ bind = "127.0.0.1:{port}", respond = "{respond}" }}\n'
            '[components.sink]\ntype = "null"\n'
        )
    return subprocess.Popen([FBP, "--log-level", "error", "run", flow], stderr=subprocess.DEVNULL)


def start_baseline(port, _workdir):
    return subprocess.Popen([BASELINE, f"127.0.0.1:{port}"], stderr=subprocess.DEVNULL)


def wrk(port, duration, connections):
    script = os.path.join(tempfile.gettempdir(), "fbp-http-bench.lua")
    with open(script, "w") as f:
        f.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                f"wrk.body = '{BODY.decode()}'\n")
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "-s", script, f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        raise RuntimeError(f"{bad.group(1)} answers were not 200:\n{out}")
    return rps


async def one_connection(port, deadline, counts):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (b"POST / HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
               b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)
    while time.perf_counter() < deadline:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = head[9:12]
        length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
        await reader.readexactly(length)
        counts[0 if status == b"200" else 1] += 1
    writer.close()


def python_load(port, duration, connections):
    counts = [0, 0]

    async def main():
        deadline = time.perf_counter() + duration
        await asyncio.gather(*(one_connection(port, deadline, counts) for _ in range(connections)))

    start = time.perf_counter()
    asyncio.run(main())
    elapsed = time.perf_counter() - start
    if counts[1]:
        raise RuntimeError(f"{counts[1]} answers were not 200")
    return counts[0] / elapsed


def measure(start, duration, connections, load, workdir):
    port = free_port()
    proc = start(port, workdir)
    try:
        wait_for_port(port)
        load(port, 1, connections)  # warm-up
        return load(port, duration, connections)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--python-load", action="store_true", help="use the Python load generator even if wrk is installed")
    args = ap.parse_args()
    load = wrk if shutil.which("wrk") and not args.python_load else python_load
    targets = [
        ("hand-written axum handler", start_baseline),
        ('fbp http-listen -> null, respond = "queued"', lambda p, d: start_fbp(p, "queued", d)),
        ('fbp http-listen -> null, respond = "delivered"', lambda p, d: start_fbp(p, "delivered", d)),
    ]
    results = {name: [] for name, _ in targets}
    with tempfile.TemporaryDirectory() as workdir:
        for run in range(args.runs):
            for name, start in targets:  # interleaved, so drift in machine load hits all alike
                rps = measure(start, args.duration, args.connections, load, workdir)
                results[name].append(rps)
                print(f"run {run + 1}: {name}: {rps:,.0f} requests/s", flush=True)
    print(f"\nload: {load.__name__}, {args.connections} connections, {args.duration}s x {args.runs} runs; "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}")
    base = statistics.median(results[targets[0][0]])
    for name, _ in targets:
        med = statistics.median(results[name])
        print(f"{name:50} median {med:>9,.0f} requests/s  ({med / base:.2f}x baseline)")


if __name__ == "__main__":
    main()
