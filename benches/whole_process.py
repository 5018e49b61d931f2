#!/usr/bin/env python3
"""Whole-process figures for fbp: start-up to first message, and the RSS of an
idle 20-component flow. Run from the repository root after
`cargo build --release`:

    python3 benches/whole_process.py [--runs 20]

Prints medians; docs/BENCHMARKS.md records them with this command.
"""
import argparse
import os
import signal
import statistics
import subprocess
import tempfile
import time

FBP = os.environ.get("FBP", os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "fbp"))


def startup_to_first_message(runs):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        p = subprocess.Popen([FBP, "--log-level", "error", "launch", "inject messages=[1] ! console"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        line = p.stdout.readline()
        times.append(time.perf_counter() - start)
        p.wait(timeout=10)
        assert line.strip() == b"1", line
    return statistics.median(times) * 1000, min(times) * 1000


def idle_rss(components=20):
    names = [f"m{i}" for i in range(components - 2)]
    chain = ["src"] + names + ["sink"]
    conns = ",\n".join(f'  "{a} -> {b}"' for a, b in zip(chain, chain[1:]))
    text = f'[flow]\nname = "idle"\nconnections = [\n{conns}\n]\n'
    text += '[components.src]\ntype = "counter"\nconfig = { interval = "1h" }\n'
    for n in names:
        text += f'[components.{n}]\ntype = "map"\nconfig = {{ expr = "." }}\n'
    text += '[components.sink]\ntype = "null"\n'
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "idle.toml")
        with open(path, "w") as f:
            f.write(text)
        p = subprocess.Popen([FBP, "--log-level", "info", "run", path], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for line in p.stderr:
            if b"Flow started." in line:
                break
        samples = []
        for _ in range(10):
            time.sleep(0.2)
            with open(f"/proc/{p.pid}/status") as s:
                rss = next(int(l.split()[1]) for l in s if l.startswith("VmRSS:"))
            samples.append(rss)
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=15)
        return statistics.median(samples) / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    med, best = startup_to_first_message(args.runs)
    print(f"start-up to first message: median {med:.1f} ms, best {best:.1f} ms over {args.runs} runs")
    print(f"RSS of an idle 20-component flow: {idle_rss():.1f} MiB (median of 10 samples)")


if __name__ == "__main__":
    main()
