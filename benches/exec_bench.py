#!/usr/bin/env python3
"""Messages/s through an `exec` transform that echoes (`cat`) against the same
lines piped through `cat` in a shell, side by side in one run. Run from the
repository root after `cargo build --release`:

    python3 benches/exec_bench.py [--messages 200000] [--runs 5]

Every case reads the same JSON-lines file and writes every line to a file:

- shell:     sh -c 'cat in.jsonl | cat > out'
- fbp:       file-read -> file-write (no program: what fbp itself costs)
- fbp+exec:  file-read -> exec (command = "cat") -> file-write

Prints the median wall time and messages/s of each; docs/BENCHMARKS.md records
them with this command.
"""
import argparse
import os
import statistics
import subprocess
import tempfile
import time

FBP = os.environ.get("FBP", os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "fbp"))

FLOW = """
[flow]
connections = [{connections}]

[components.read]
type = "file-read"
config = {{ path = "in.jsonl" }}
capacity = 1000
{exec}
[components.write]
type = "file-write"
config = {{ path = "out.txt", format = "lines", append = false }}
"""

EXEC = """
[components.cat]
type = "exec"
config = { command = "cat" }
"""


def flow(with_exec):
    if with_exec:
        return FLOW.format(connections='"read -> cat", "cat -> write"', exec=EXEC)
    return FLOW.format(connections='"read -> write"', exec="")


def timed(cmd, cwd, n):
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    with open(os.path.join(cwd, "out.txt"), "rb") as f:
        lines = sum(1 for _ in f)
    assert lines == n, f"{cmd}: {lines} lines out of {n}"
    os.remove(os.path.join(cwd, "out.txt"))
    return elapsed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    fbp = os.path.abspath(FBP)
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "in.jsonl"), "w") as f:
            for i in range(args.messages):
                f.write(f'{{"sensor": "s-{i % 16}", "value": {i * 0.5}, "seq": {i}}}\n')
        for name, with_exec in [("fbp.toml", False), ("fbp-exec.toml", True)]:
            with open(os.path.join(d, name), "w") as f:
                f.write(flow(with_exec))
        cases = [
            ("shell: cat in.jsonl | cat > out", ["sh", "-c", "cat in.jsonl | cat > out.txt"]),
            ("fbp: file-read -> file-write", [fbp, "--log-level", "error", "run", "fbp.toml"]),
            ("fbp: file-read -> exec cat -> file-write", [fbp, "--log-level", "error", "run", "fbp-exec.toml"]),
        ]
        times = {label: [] for label, _ in cases}
        for _ in range(args.runs):
            # Interleaved, so that a busy moment of the machine hits every case alike.
            for label, cmd in cases:
                times[label].append(timed(cmd, d, args.messages))
    print(f"{args.messages} messages, median of {args.runs} runs")
    print(f"{'case':44} {'wall':>9} {'messages/s':>12}")
    for label, _ in cases:
        t = statistics.median(times[label])
        print(f"{label:44} {t * 1000:7.0f} ms {args.messages / t:12,.0f}")


if __name__ == "__main__":
    main()
