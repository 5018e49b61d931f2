#!/usr/bin/env python3
"""Writes cli/symbol-order.txt: the functions an idle or working relay runs,
hottest first, which the release link places first in `.text`
(`--symbol-ordering-file`, see cli/build.rs). Run from the repository root
after `cargo build --release --examples && cargo build --release --bins`:

    python3 scripts/symbol-order.py

Why: the kernel maps a file-backed page together with its neighbours (fault
around, 64 KB), so code that runs spread over the binary's 12 MB of text keeps
most of it resident even when the relay does nothing. Packed at the front, the
code that runs shares the same few windows.

How: each relay below runs under `valgrind --tool=callgrind` against its own
mosquitto and nats-server on free loopback ports; callgrind lists every
function that ran, with its instruction count. Start-up and the first message
come first (what an idle relay keeps resident), then the functions that only
the traffic after it ran. The names are the linker's (mangled) symbols, so the
file is regenerated whenever dependencies, their features or the compiler
change (a symbol's hash comes from its crate's metadata); names that no longer
exist are ignored by the linker. `fbp` is built on its own (not with the
examples) so that its dependencies have the features a user's build gives.
"""
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benches"))
import broker_bench as bench  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "cli", "symbol-order.txt")


def costs(path):
    """Self instruction counts per function from a callgrind output file
    (written with --compress-strings=no)."""
    totals = {}
    current = None
    skip_next = False
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("fn="):
                current = line[3:].strip()
                totals.setdefault(current, 0)
            elif line.startswith("cfn="):
                totals.setdefault(line[4:].strip(), 0)
            elif line.startswith("calls="):
                skip_next = True  # the next cost line is the call's inclusive cost
            elif line[:1].isdigit() or line[:1] in "+-*":
                if skip_next:
                    skip_next = False
                elif current is not None:
                    parts = line.split()
                    if len(parts) >= 2 and parts[1].isdigit():
                        totals[current] += int(parts[1])
    return totals


def under_callgrind(argv, out):
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--compress-strings=no",
            "--compress-pos=no", "--demangle=no", "--dump-line=no", *argv]


def dumps(out):
    """The files a run wrote: `out` or `out.1`, `out.2`, ... in dump order."""
    parts = sorted((p for p in os.listdir(os.path.dirname(out)) if p.startswith(os.path.basename(out))),
                   key=lambda p: int(p.rsplit(".", 1)[1]) if re.search(r"\.\d+$", p) else 0)
    return [os.path.join(os.path.dirname(out), p) for p in parts]


def merge(into, more):
    for name, cost in more.items():
        into[name] = into.get(name, 0) + cost
    return into


def dump_ready(relay):
    """Ends callgrind's first part: what start-up and the first message ran."""
    subprocess.run(["callgrind_control", "--dump=ready", str(relay.pid)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)


def phases(out):
    """(start-up costs, traffic costs) of a run: its first dump, then the rest."""
    files = dumps(out)
    traffic = {}
    for f in files[1:]:
        merge(traffic, costs(f))
    return costs(files[0]), traffic


def profile(name, argv, publish, receive, traffic, workdir, log):
    """Start-up and one probe (dumped), then `traffic` (msgs, rate) at QoS as
    given by the URIs, then SIGTERM. Returns (start-up costs, traffic costs)."""
    out = os.path.join(workdir, f"{name}.callgrind")
    relay, ready = bench.start_relay(under_callgrind(argv, out), publish, receive, log, timeout=120)
    try:
        dump_ready(relay)
        for count, rate in traffic:
            bench.load(publish, receive, count, rate, timeout=300)
    finally:
        bench.stop(relay, seconds=120)
    print(f"  {name}: ready in {ready:.1f} s under callgrind", file=sys.stderr)
    return phases(out)


def profile_sqlite(argv, db, src, workdir, log):
    """MQTT -> SQLite: start-up until a probe row lands (dumped), then rows."""
    out = os.path.join(workdir, "sqlite.callgrind")
    relay = subprocess.Popen(under_callgrind(argv, out), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=log)
    try:
        bench.wait_row(db, relay, src, seconds=120)
        dump_ready(relay)
        rows = bench.max_rowid(db) + 5000
        bench.load(src, "none", 5000, timeout=300)
        deadline = time.monotonic() + 120
        while bench.max_rowid(db) < rows and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        bench.stop(relay, seconds=120)
    return phases(out)


def main():
    with tempfile.TemporaryDirectory() as workdir, open(os.path.join(workdir, "relay.log"), "w") as log:
        brokers = bench.Brokers(workdir)
        try:
            runs = []
            for scheme, port in (("mqtt", brokers.mqtt), ("nats", brokers.nats)):
                for qos in (0, 1):
                    src, dst, _ = bench.uris(scheme, port, qos)
                    argv = bench.fbp_relay(src, dst)
                    runs.append(profile(f"{scheme}-qos{qos}", argv, src, dst, [(2000, 0), (500, 500)],
                                          workdir, log))
            db = os.path.join(workdir, "rows.db")
            src = f"mqtt://127.0.0.1:{brokers.mqtt}/bench/sqlite?qos=0"
            argv = bench.fbp_relay(src, f"sqlite://{db}?table=readings")
            runs.append(profile_sqlite(argv, db, src, workdir, log))
        finally:
            brokers.close()
    start, traffic = {}, {}
    for s, t in runs:
        merge(start, s)
        merge(traffic, t)
    ours = symbols(bench.FBP)
    first = [k for k in sorted(start, key=lambda k: -start[k]) if k in ours]
    then = [k for k in sorted(traffic, key=lambda k: -traffic[k]) if k in ours and k not in start]
    with open(OUT, "w") as f:
        f.write("".join(name + "\n" for name in first + then))
    print(f"{OUT}: {len(first)} start-up and first-message functions, then {len(then)} more from traffic",
          file=sys.stderr)


def symbols(binary):
    """The function symbols the binary defines (so the file lists only those)."""
    out = subprocess.run(["nm", "--defined-only", binary], stdout=subprocess.PIPE, check=True, text=True).stdout
    rows = (line.split() for line in out.splitlines())
    return {row[2] for row in rows if len(row) == 3 and row[1] in "tTwW"}


if __name__ == "__main__":
    main()
