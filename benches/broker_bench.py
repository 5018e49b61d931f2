#!/usr/bin/env python3
"""Broker relays, whole process: `fbp relay` against hand-written relays and
against the broker alone, side by side in one run. Run from the repository
root after `cargo build --release --examples && cargo build --release --bins`
(in that order: built together with the examples, `fbp` takes the features the
dev-dependencies add, so its symbols no longer match cli/symbol-order.txt):

    python3 benches/broker_bench.py [--runs 5] [--messages 200000] [--rate 5000] [--seconds 10]

It starts its own mosquitto (with no limit on the messages it queues for a
subscriber, so that a QoS 0 burst reaches each relay whole) and nats-server on
free loopback ports (killed by PID at the end), then, for MQTT -> MQTT and
NATS -> NATS, runs in turn (order alternating between runs):

- broker: the load tool publishes straight to its own subscriber (the ceiling);
- fbp:    `fbp relay IN OUT`;
- hand:   the hand-written relay (benches/baseline/*_relay.rs);

and for MQTT -> SQLite, `fbp relay mqtt://.. sqlite://..` against the batched
rusqlite loop (benches/baseline/mqtt_sqlite.rs; both commit batches of up to 500,
the loop what is queued, fbp also what comes within its default `flush_interval`
of 50 ms). The load tool is
benches/baseline/broker_load.rs. Figures per relay process:

- throughput: --messages readings at QoS 0 as fast as possible, received/s end
  to end, and the relay's CPU seconds (its threads' on-CPU nanoseconds from
  /proc/PID/task/*/schedstat) per 100 000 messages;
- latency: --rate msg/s for --seconds at QoS 1, p50/p99 from the time each
  reading carries, and the CPU per 100 000 messages at that rate;
- start-up: relay spawn until a probe published to IN comes back on OUT;
- RSS idle (VmRSS once ready, before traffic) and peak (VmHWM at the end).

Prints medians, ratios fbp / hand and pass/fail against the targets;
docs/BENCHMARKS.md records them with this command.
"""
import argparse
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

TARGET = os.environ.get("CARGO_TARGET_DIR", "target")
FBP = os.environ.get("FBP", os.path.join(TARGET, "release", "fbp"))
EXAMPLES = os.path.join(TARGET, "release", "examples")
LOAD = os.path.join(EXAMPLES, "broker-load")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {seconds} s")


def cpu_seconds(pid):
    """On-CPU time of the process's threads, from the scheduler's own
    nanosecond accounting (`/proc/PID/task/*/schedstat`): utime + stime
    come in ticks of 10 ms, a tenth of a flat-out NATS run's CPU."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that ended meanwhile
    return total / 1e9


def memory_mib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":")) / 1024


def stop(proc, seconds=10):
    """SIGTERM, then SIGKILL; only the process we started, by its PID."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=seconds)


class Brokers:
    """mosquitto and nats-server on free loopback ports, in a temporary dir."""

    def __init__(self, workdir, mqtt_inflight=None, mqtt_queued=0):
        self.procs = []
        self.mqtt = free_port()
        self.nats = free_port()
        conf = os.path.join(workdir, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write(f"listener {self.mqtt} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    f"log_dest file {workdir}/mosquitto.log\n")
            if os.geteuid() == 0:
                f.write("user root\n")
            if mqtt_inflight is not None:
                f.write(f"max_inflight_messages {mqtt_inflight}\n")
            # mosquitto drops QoS 0 messages for a subscriber with this many
            # packets not yet written to it (its default is 1 000): flat out, the
            # load tool outruns a relay's reader, and the relay that drains more
            # slowly would get less work. 0 is no limit, so every relay gets all.
            f.write(f"max_queued_messages {mqtt_queued}\n")
        self.procs.append(subprocess.Popen(["mosquitto", "-c", conf], stdin=subprocess.DEVNULL,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self.procs.append(subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(self.nats),
                                            "-l", os.path.join(workdir, "nats-server.log")],
                                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL))
        wait_port(self.mqtt)
        wait_port(self.nats)

    def close(self):
        for p in self.procs:
            stop(p)


def load(publish, receive, count, rate=0, timeout=120):
    """Runs the load tool; returns its JSON summary."""
    cmd = [LOAD, "--publish", publish, "--receive", receive, "--count", str(count), "--rate", str(rate),
           "--timeout", str(timeout)]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout + 30)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {out.stderr.decode()}")
    return json.loads(out.stdout.decode().strip().splitlines()[-1])


def start_relay(argv, publish, receive, log, timeout=20):
    """Starts the relay while the load tool probes IN -> OUT; returns the
    process and the seconds from spawn until a probe came through."""
    probe = subprocess.Popen([LOAD, "--probe", "--publish", publish, "--receive", receive, "--timeout", str(timeout)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert json.loads(probe.stdout.readline())["subscribed"]
        start = time.perf_counter()
        relay = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        ready = json.loads(probe.stdout.readline())
        elapsed = time.perf_counter() - start
    finally:
        probe.wait(timeout=timeout + 10)
    if not ready.get("ready"):
        stop(relay)
        raise RuntimeError(f"{argv}: no probe came through in {timeout} s")
    return relay, elapsed


def relay_run(argv, publish, receive, count, rate, log):
    """One relay process: start-up, idle RSS, one load, CPU and peak RSS."""
    relay, ready_s = start_relay(argv, publish, receive, log)
    try:
        time.sleep(0.5)
        idle = memory_mib(relay.pid, "VmRSS")
        cpu0 = cpu_seconds(relay.pid)
        result = load(publish, receive, count, rate)
        result["cpu_s"] = cpu_seconds(relay.pid) - cpu0
        result["peak_mib"] = memory_mib(relay.pid, "VmHWM")
        result["idle_mib"] = idle
        result["ready_ms"] = ready_s * 1000
        if relay.poll() is not None:
            raise RuntimeError(f"{argv} exited with {relay.returncode}")
    finally:
        stop(relay)
    return result


def uris(scheme, port, qos):
    q = f"?qos={qos}" if scheme == "mqtt" else ""
    base = f"{scheme}://127.0.0.1:{port}"
    return f"{base}/bench/in{q}", f"{base}/bench/out{q}", f"{base}/bench/direct{q}"


def fbp_relay(src, dst, fbp=FBP):
    """The command line of `fbp relay SRC DST`."""
    return [fbp, "--log-level", "warn", "relay", src, dst]


def relay_argvs(scheme, src, dst):
    hand = os.path.join(EXAMPLES, f"{scheme}-relay-baseline")
    return {"fbp": fbp_relay(src, dst), "hand": [hand, src, dst]}


def bus_case(scheme, port, args, log):
    """MQTT or NATS -> the same: throughput at QoS 0 and latency at QoS 1."""
    results = {v: {"thr": [], "lat": []} for v in ("broker", "fbp", "hand")}
    for run in range(args.runs):
        order = ["broker", "fbp", "hand"]
        if run % 2:
            order.reverse()
        for variant in order:
            for kind, qos, count, rate in (("thr", 0, args.messages, 0),
                                           ("lat", 1, args.rate * args.seconds, args.rate)):
                src, dst, direct = uris(scheme, port, qos)
                if variant == "broker":
                    r = load(direct, direct, count, rate)
                else:
                    r = relay_run(relay_argvs(scheme, src, dst)[variant], src, dst, count, rate, log)
                results[variant][kind].append(r)
                print(f"  {scheme} run {run + 1} {variant:6} {kind}: {json.dumps(r)}", file=sys.stderr)
    return results


def max_rowid(db):
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute("SELECT max(rowid) FROM readings").fetchone()[0] or 0
    except sqlite3.OperationalError:
        return 0


def wait_row(db, relay, publish, seconds=20):
    """Publishes probes until one lands in the table."""
    deadline = time.monotonic() + seconds
    while max_rowid(db) == 0:
        if time.monotonic() > deadline or relay.poll() is not None:
            raise RuntimeError(f"{relay.args}: no probe row in {seconds} s")
        load(publish, "none", 1, timeout=10)
        time.sleep(0.05)


def sqlite_run(argv, db, publish, count, log):
    """One MQTT -> SQLite process: wait until a probe lands in the table, then
    publish `count` readings and time the rows until the last one lands."""
    relay = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_row(db, relay, publish)
        time.sleep(0.5)
        probes = max_rowid(db)
        idle = memory_mib(relay.pid, "VmRSS")
        cpu0 = cpu_seconds(relay.pid)
        start = time.perf_counter()
        load(publish, "none", count)
        rows, last, seen_at = probes, start, time.perf_counter()
        while rows < probes + count and time.perf_counter() - seen_at < 3:
            time.sleep(0.02)
            now = max_rowid(db)
            if now > rows:
                rows, seen_at = now, time.perf_counter()
                last = seen_at
        with sqlite3.connect(db) as conn:
            total = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        return {"rows": total - probes, "sent": count, "per_s": (total - probes) / max(last - start, 1e-9),
                "cpu_s": cpu_seconds(relay.pid) - cpu0, "idle_mib": idle,
                "peak_mib": memory_mib(relay.pid, "VmHWM")}
    finally:
        stop(relay)


def sqlite_case(port, workdir, args, log):
    results = {"fbp": [], "hand": []}
    src = f"mqtt://127.0.0.1:{port}/bench/sqlite?qos=0"
    hand = os.path.join(EXAMPLES, "mqtt-sqlite-baseline")
    for run in range(args.runs):
        order = ["fbp", "hand"] if run % 2 == 0 else ["hand", "fbp"]
        for variant in order:
            db = os.path.join(workdir, f"run{run}-{variant}.db")
            argv = {"fbp": fbp_relay(src, f"sqlite://{db}?table=readings"),
                    "hand": [hand, src, db, "readings", "500"]}[variant]
            r = sqlite_run(argv, db, src, args.sqlite_messages, log)
            results[variant].append(r)
            os.remove(db)
            print(f"  sqlite run {run + 1} {variant:6}: {json.dumps(r)}", file=sys.stderr)
    return results


def med(rows, key):
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else float("nan")


def per_100k(rows, count_key):
    return statistics.median(r["cpu_s"] / max(r[count_key], 1) * 100_000 for r in rows)


def verdict(ok):
    return "PASS" if ok else "FAIL"


def report_bus(name, res, args):
    print(f"\n## {name}: {args.messages} msgs at QoS 0; latency at {args.rate} msg/s QoS 1 for {args.seconds} s")
    print("| case | received/s | lost | CPU s / 100k msgs (flat out / at rate) | lost (lat) | p50 µs | p99 µs | max µs "
          "| dup | ready ms | RSS idle MiB | RSS peak MiB (thr / lat) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for v in ("broker", "fbp", "hand"):
        thr, lat = res[v]["thr"], res[v]["lat"]
        lost = med([{"l": r["sent"] - r["received"]} for r in thr], "l")
        lost_lat = med([{"l": r["sent"] - r["received"]} for r in lat], "l")
        relay = v != "broker"
        cpu = f"{per_100k(thr, 'received'):.3f} / {per_100k(lat, 'received'):.3f}" if relay else "—"
        ready = f"{med(thr, 'ready_ms'):.1f}" if relay else "—"
        idle = f"{med(thr, 'idle_mib'):.1f}" if relay else "—"
        peak = f"{med(thr, 'peak_mib'):.1f} / {med(lat, 'peak_mib'):.1f}" if relay else "—"
        print(f"| {v} | {med(thr, 'per_s'):,.0f} | {lost:.0f} | {cpu} | {lost_lat:.0f} | {med(lat, 'p50_us'):.0f} | "
              f"{med(lat, 'p99_us'):.0f} | {med(lat, 'max_us'):.0f} | {med(lat, 'duplicates'):.0f} | {ready} | {idle} | {peak} |")
    f, h = res["fbp"], res["hand"]
    thr_ratio = med(f["thr"], "per_s") / med(h["thr"], "per_s")
    cpu_ratio = per_100k(f["thr"], "received") / per_100k(h["thr"], "received")
    cpu_rate_ratio = per_100k(f["lat"], "received") / per_100k(h["lat"], "received")
    p99 = med(f["lat"], "p99_us")
    idle = med(f["thr"], "idle_mib")
    print(f"\nfbp / hand: throughput {thr_ratio:.2f} (target >= 0.9: {verdict(thr_ratio >= 0.9)}), "
          f"CPU per message {cpu_ratio:.2f} flat out (target <= 1.2: {verdict(cpu_ratio <= 1.2)}) and "
          f"{cpu_rate_ratio:.2f} at {args.rate} msg/s, "
          f"p99 {p99:.0f} µs (target < 1000: {verdict(p99 < 1000)}; the broker alone: {med(res['broker']['lat'], 'p99_us'):.0f}), "
          f"idle RSS {idle:.1f} MiB = {idle * 1.048576:.1f} MB (target < 10 MB: {verdict(idle * 1.048576 < 10)})")


def report_sqlite(res, args):
    print(f"\n## MQTT -> SQLite: {args.sqlite_messages} msgs at QoS 0, batches of 500")
    print("| case | rows/s | rows lost | CPU s / 100k rows | RSS idle MiB | RSS peak MiB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for v in ("fbp", "hand"):
        rows = res[v]
        lost = med([{"l": r["sent"] - r["rows"]} for r in rows], "l")
        print(f"| {v} | {med(rows, 'per_s'):,.0f} | {lost:.0f} | {per_100k(rows, 'rows'):.3f} | "
              f"{med(rows, 'idle_mib'):.1f} | {med(rows, 'peak_mib'):.1f} |")
    ratio = med(res["fbp"], "per_s") / med(res["hand"], "per_s")
    cpu = per_100k(res["fbp"], "rows") / per_100k(res["hand"], "rows")
    print(f"\nfbp / hand: rows/s {ratio:.2f} (target >= 0.9: {verdict(ratio >= 0.9)}), "
          f"CPU per row {cpu:.2f} (target <= 1.2: {verdict(cpu <= 1.2)})")


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def stale_symbols():
    """How many of cli/symbol-order.txt's names the fbp binary no longer
    has, and how many it lists (a stale list leaves the code that runs spread
    over the binary: idle RSS goes up by a MiB or two)."""
    listed = os.path.join(os.path.dirname(__file__), "..", "cli", "symbol-order.txt")
    try:
        out = subprocess.run(["nm", FBP], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
        with open(listed) as f:
            names = [line.strip() for line in f if line.strip()]
    except OSError:
        return 0, 0
    have = {line.split()[-1] for line in out.splitlines() if line.strip()}
    return sum(1 for n in names if n not in have), len(names)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--rate", type=int, default=5000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--sqlite-messages", type=int, default=100_000)
    ap.add_argument("--cases", default="mqtt,nats,sqlite")
    ap.add_argument("--mqtt-inflight", type=int, help="mosquitto's max_inflight_messages (default: its own, 20)")
    ap.add_argument("--mqtt-queued", type=int, default=0,
                    help="mosquitto's max_queued_messages (default: 0, no limit; its own default is 1000)")
    args = ap.parse_args()
    cases = args.cases.split(",")
    print(f"load average before: {loadavg()}, median of {args.runs} runs")
    missing, listed = stale_symbols()
    if missing > listed // 20:
        print(f"warning: {missing} of the {listed} functions in cli/symbol-order.txt are not in {FBP}; "
              "run scripts/symbol-order.py and rebuild (the idle RSS is measured with a stale list)")
    with tempfile.TemporaryDirectory() as d:
        brokers = Brokers(d, args.mqtt_inflight, args.mqtt_queued)
        try:
            with open(os.path.join(d, "relays.log"), "wb") as log:
                # Each case reports as soon as it is done, so a later failure keeps it.
                if "mqtt" in cases:
                    report_bus("MQTT -> MQTT", bus_case("mqtt", brokers.mqtt, args, log), args)
                if "nats" in cases:
                    report_bus("NATS -> NATS (core; the QoS 1 run is plain NATS too)",
                               bus_case("nats", brokers.nats, args, log), args)
                if "sqlite" in cases:
                    report_sqlite(sqlite_case(brokers.mqtt, d, args, log), args)
        finally:
            brokers.close()
            with open(os.path.join(d, "relays.log"), "rb") as log:
                tail = log.read()[-2000:]
            if tail:
                print(f"relay logs (tail):\n{tail.decode(errors='replace')}", file=sys.stderr)
            print(f"\nload average after: {loadavg()}")

if __name__ == "__main__":
    main()
