#!/usr/bin/env python3
"""Whole-process figures for fbp: start-up to first message, the RSS of an
idle 20-component flow, and the RSS of an idle MQTT relay (`fbp relay
mqtt://.. mqtt://..`, connected to a mosquitto this script starts on a free
port) next to the hand-written rumqttc relay. Run from the repository root
after `cargo build --release --bin fbp --example mqtt-relay-baseline`:

    python3 benches/whole_process.py [--runs 20] [--only relay]

Prints medians; docs/BENCHMARKS.md records them with this command.
"""
import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time

TARGET = os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release")
FBP = os.environ.get("FBP", os.path.join(TARGET, "fbp"))
BASELINE = os.path.join(TARGET, "examples", "mqtt-relay-baseline")


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
        rss = rss_samples(p.pid)
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=15)
        return rss


def rss_samples(pid):
    """Median VmRSS of `pid` in MiB over 10 samples 0.2 s apart."""
    samples = []
    for _ in range(10):
        time.sleep(0.2)
        with open(f"/proc/{pid}/status") as s:
            samples.append(next(int(l.split()[1]) for l in s if l.startswith("VmRSS:")))
    return statistics.median(samples) / 1024


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connections(port, pid):
    """Established TCP connections from `pid` to 127.0.0.1:`port`."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    count = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if cols[2] == f"0100007F:{port:04X}" and cols[3] == "01" and cols[9] in inodes:
                count += 1
    return count


def idle_relay_rss():
    """Idle RSS (MiB) of `fbp relay` and of the hand-written relay, each
    measured once both of its connections to a fresh mosquitto are up."""
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    out = {}
    with tempfile.TemporaryDirectory() as d:
        port = free_port()
        conf = os.path.join(d, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
        broker = subprocess.Popen([mosquitto, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 10
            while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
                assert time.time() < deadline, "mosquitto did not start"
                time.sleep(0.05)
            urls = [f"mqtt://127.0.0.1:{port}/in", f"mqtt://127.0.0.1:{port}/out"]
            for name, cmd in [("fbp relay", [FBP, "--log-level", "error", "relay"] + urls),
                              ("hand-written rumqttc relay", [BASELINE] + urls)]:
                if not os.path.exists(cmd[0]):
                    continue
                p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    deadline = time.time() + 10
                    while connections(port, p.pid) < 2:
                        assert time.time() < deadline and p.poll() is None, f"{name} did not connect"
                        time.sleep(0.05)
                    out[name] = rss_samples(p.pid)
                finally:
                    p.send_signal(signal.SIGTERM)
                    p.wait(timeout=15)
        finally:
            broker.kill()
            broker.wait()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--only", choices=["startup", "idle", "relay"])
    args = ap.parse_args()
    if args.only in (None, "startup"):
        med, best = startup_to_first_message(args.runs)
        print(f"start-up to first message: median {med:.1f} ms, best {best:.1f} ms over {args.runs} runs")
    if args.only in (None, "idle"):
        print(f"RSS of an idle 20-component flow: {idle_rss():.1f} MiB (median of 10 samples)")
    if args.only in (None, "relay"):
        for name, rss in idle_relay_rss().items():
            print(f"RSS of an idle MQTT relay, {name}: {rss:.1f} MiB (median of 10 samples)")


if __name__ == "__main__":
    main()
