//! Running flows: the sample sensor flow, acknowledgement through fan-out and a
//! filter, graceful shutdown on SIGTERM, and back-pressure under a slow sink.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use fbp_runtime::flow::check::check_source;
use fbp_runtime::network::{RunOptions, run};
use fbp_runtime::spec::{Acks, BuildContext, Catalogue, ComponentSpec, Delivery, KeySpec, KeyType, Kind, PortSpec};
use fbp_runtime::{Ack, Context, Failure, Instance, Message, Outcome, Task, TaskFuture, value};

use crate::util::{fbp, lines, root, rss_kib, signal, stderr, stdout, summary, tempdir, wait_until, write};

#[test]
fn sensor_flow_finite_variant_stores_averages_and_prints_alerts() {
    let dir = tempdir();
    let sample = std::fs::read_to_string(root().join("flows/sensor.toml")).unwrap();
    let finite = sample
        .replace(
            "config = { sensors = 4, interval = \"200ms\" }",
            "config = { sensors = 4, interval = \"5ms\", count = 400, seed = 7 }",
        )
        .replace("every = \"10s\"", "every = \"100ms\"");
    assert_ne!(finite, sample, "the sample flow changed; update this test");
    let flow = write(dir.path(), "sensor.toml", &finite);
    let o = fbp().arg("run").arg(&flow).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));

    let db = rusqlite::Connection::open(dir.path().join("sensor.db")).unwrap();
    let mut stmt = db.prepare("SELECT sensor, avg, min, max, count FROM averages").unwrap();
    let rows: Vec<(String, f64, f64, f64, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(rows.len() >= 4, "{rows:?}");
    assert_eq!(rows.iter().map(|r| r.4).sum::<i64>(), 400, "every reading is in exactly one window");
    for (sensor, avg, min, max, _) in &rows {
        assert!(sensor.starts_with("sensor-"), "{sensor}");
        assert!(min <= avg && avg <= max, "{sensor}: {min} <= {avg} <= {max}");
    }
    let hot_rows = rows.iter().filter(|r| r.1 > 28.0).count();
    let alerts: Vec<serde_json::Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(hot_rows > 0, "the sample flow's alert must fire: {rows:?}");
    assert_eq!(alerts.len(), hot_rows, "one alert per stored average above 28");
    assert!(alerts.iter().all(|a| a["avg"].as_f64().unwrap() > 28.0));
}

// ---- acknowledgement through fan-out and a filter ----

static ACKS: OnceLock<Mutex<Vec<(u64, Outcome, usize)>>> = OnceLock::new();
static OUT_PATH: OnceLock<std::path::PathBuf> = OnceLock::new();

struct AckSource {
    count: u64,
}

impl Task for AckSource {
    fn run(self: Box<Self>, ctx: Context) -> TaskFuture {
        Box::pin(async move {
            let out = ctx.output("out");
            for n in 0..self.count {
                let mut msg = Message::new(value::object([("n", value::int(n as i64))]), ctx.meta());
                msg.ack = Some(Ack::new(move |outcome| {
                    // When the source learns the outcome, the sink must already have the line.
                    let lines = std::fs::read_to_string(OUT_PATH.get().unwrap()).unwrap_or_default();
                    let written = lines.lines().filter(|l| l.contains(&format!("{{\"n\":{n}}}"))).count();
                    ACKS.get_or_init(Default::default).lock().unwrap().push((n, outcome, written));
                }));
                out.send(msg).await.map_err(Failure::from)?;
            }
            Ok(())
        })
    }
}

static ACK_SOURCE: ComponentSpec = ComponentSpec {
    name: "ack-source",
    summary: "Emits {n} with an acknowledgement handle (test only).",
    doc: "Test source.",
    kind: Kind::Source,
    inputs: &[],
    outputs: &[PortSpec { name: "out", ty: "object", doc: "numbers" }],
    config: &[KeySpec::new("count", KeyType::Integer, "10", "How many messages to emit.")],
    delivery: Delivery::AtLeastOnce,
    acks: Acks::Prompt,
    stateless: false,
    example: "",
    build: |ctx: &BuildContext| Ok(Instance::task(AckSource { count: ctx.config["count"].as_u64().unwrap_or(10) })),
    ports: None,
    probe: None,
};

static ACK_CATALOGUE: Catalogue =
    Catalogue(&[&ACK_SOURCE, &fbp_components::transform::filter::SPEC, &fbp_components::storage::file_write::SPEC]);

#[test]
fn source_learns_delivery_only_after_every_copy_is_committed_or_dropped() {
    let dir = tempdir();
    let all = dir.path().join("all.jsonl");
    OUT_PATH.set(all.clone()).unwrap();
    let text = format!(
        "[flow]\nname = \"acks\"\nconnections = [\"src -> even\", \"src -> all\", \"even -> evens\"]\n\
         [components.src]\ntype = \"ack-source\"\nconfig = {{ count = 500 }}\n\
         [components.even]\ntype = \"filter\"\nconfig = {{ expr = \".n % 2 == 0\" }}\n\
         [components.all]\ntype = \"file-write\"\nconfig = {{ path = {all:?}, format = \"lines\" }}\n\
         [components.evens]\ntype = \"file-write\"\nconfig = {{ path = {:?}, format = \"lines\" }}\n",
        dir.path().join("evens.jsonl")
    );
    let flow = check_source("<acks>", &text, dir.path(), &ACK_CATALOGUE, &|_| None)
        .unwrap_or_else(|d| panic!("{}", d.render()));
    let report = run(flow, RunOptions::default());
    report.result.unwrap();
    let acks = ACKS.get_or_init(Default::default).lock().unwrap().clone();
    assert_eq!(acks.len(), 500, "each message acknowledged exactly once");
    let mut seen: Vec<u64> = acks.iter().map(|a| a.0).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 500);
    assert!(acks.iter().all(|(_, o, _)| *o == Outcome::Delivered));
    assert!(acks.iter().all(|(_, _, written)| *written == 1), "acknowledged before the sink wrote it");
    let evens = std::fs::read_to_string(dir.path().join("evens.jsonl")).unwrap();
    assert_eq!(evens.lines().count(), 250, "the filter dropped the odd ones (and acknowledged them)");
}

// ---- shutdown and back-pressure through the binary ----

#[test]
fn sigterm_mid_run_drains_every_emitted_message_into_the_file() {
    let dir = tempdir();
    let out = dir.path().join("out.jsonl");
    let flow = write(
        dir.path(),
        "f.toml",
        "[flow]\nname = \"term\"\nconnections = [\"c -> w\"]\n[components.c]\ntype = \"counter\"\nconfig = { interval = \"0s\" }\n\
         [components.w]\ntype = \"file-write\"\nconfig = { path = \"out.jsonl\" }\n",
    );
    let mut child = fbp().args(["--log-format", "json", "run"]).arg(&flow).stderr(Stdio::piped()).spawn().unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || std::fs::metadata(&out).is_ok_and(|m| m.len() > 100_000)),
        "no output"
    );
    signal(&child, "TERM");
    let started = Instant::now();
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "within --shutdown-timeout");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.ends_with('\n'), "no partial line");
    let counts: Vec<u64> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("bad line {l}: {e}"))["data"]["count"].as_u64().unwrap())
        .collect();
    assert!(counts.iter().enumerate().all(|(i, c)| *c == i as u64 + 1), "a gap or a reorder in the file");
    assert_eq!(summary(&err, "c", "sent"), Some(counts.len() as u64), "every emitted message is in the file");
}

#[test]
fn fast_source_into_slow_sink_keeps_memory_bounded_and_drops_nothing() {
    let dir = tempdir();
    let flow = write(
        dir.path(),
        "bp.toml",
        "[flow]\nname = \"bp\"\nconnections = [\"c -> out\"]\n[components.c]\ntype = \"counter\"\nconfig = { interval = \"0s\" }\n\
         [components.out]\ntype = \"console\"\n",
    );
    let mut child = fbp().args(["--log-level", "warn", "run"]).arg(&flow).stdout(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut expected, mut peak, mut early) = (1u64, 0u64, None);
    let start = Instant::now();
    let mut next_sample = Duration::ZERO;
    // The slow sink: this reader takes about 2000 lines a second for 20 s.
    while start.elapsed() < Duration::from_secs(20) {
        for _ in 0..20 {
            let line = lines.next().expect("stream continues").unwrap();
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["count"].as_u64(), Some(expected), "a message was dropped or reordered");
            expected += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
        if start.elapsed() >= next_sample {
            let rss = rss_kib(pid).unwrap();
            peak = peak.max(rss);
            if start.elapsed() >= Duration::from_secs(5) {
                early.get_or_insert(rss);
            }
            next_sample += Duration::from_millis(500);
        }
    }
    signal(&child, "TERM");
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        assert_eq!(v["count"].as_u64(), Some(expected), "a message was dropped during the drain");
        expected += 1;
    }
    assert!(child.wait().unwrap().success());
    let early = early.unwrap();
    assert!(peak < 64 * 1024, "RSS peaked at {peak} KiB");
    assert!(peak <= early + 8 * 1024, "RSS grew from {early} KiB to {peak} KiB under back-pressure");
    assert!(expected > 20_000, "the reader kept up its pace: {expected}");
}

#[test]
fn merge_combines_inputs_and_fan_out_copies_to_every_receiver() {
    let dir = tempdir();
    let flow = write(
        dir.path(),
        "f.toml",
        "[flow]\nname = \"mf\"\nconnections = [\"a -> w1\", \"b -> w1\", \"a -> w2\", \"b.out -> w2.in\"]\n\
         [components.a]\ntype = \"inject\"\nconfig = { messages = [1, 2, 3] }\n\
         [components.b]\ntype = \"inject\"\nconfig = { messages = [10, 20] }\n\
         [components.w1]\ntype = \"file-write\"\nconfig = { path = \"w1.jsonl\", format = \"lines\" }\n\
         [components.w2]\ntype = \"file-write\"\nconfig = { path = \"w2.jsonl\", format = \"lines\" }\n",
    );
    let o = fbp().arg("run").arg(&flow).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    for f in ["w1.jsonl", "w2.jsonl"] {
        let mut got: Vec<i64> =
            std::fs::read_to_string(dir.path().join(f)).unwrap().lines().map(|l| l.parse().unwrap()).collect();
        got.sort();
        assert_eq!(got, [1, 2, 3, 10, 20], "{f}");
    }
}

#[test]
fn file_read_follows_ten_create_rotations_with_a_writer_that_reopens_a_second_later() {
    use std::io::Write;
    let dir = tempdir();
    let log = dir.path().join("app.log");
    std::fs::write(&log, "").unwrap();
    let flow = "[flow]\nname = \"tail\"\nconnections = [\"input -> out\"]\n\
                [components.input]\ntype = \"file-read\"\nconfig = { path = \"app.log\", follow = true, poll_interval = \"50ms\", rotate_grace = \"1500ms\" }\n\
                [components.out]\ntype = \"file-write\"\nconfig = { path = \"out.jsonl\", format = \"lines\" }\n";
    let fbp = crate::sockets::Running::start(dir.path(), flow);
    assert!(fbp.wait_log("Flow started", 1), "{}", fbp.log());
    let (rotations, per_file) = (10, 2_000);
    let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    let mut n = 0;
    for r in 0..rotations {
        for _ in 0..per_file / 2 {
            writeln!(file, "{{\"n\": {n}}}").unwrap();
            n += 1;
        }
        // logrotate's `create`: the log is renamed and a new, empty one made
        // in its place; the writer goes on with the old one until told to reopen.
        std::fs::rename(&log, dir.path().join(format!("app.log.{r}"))).unwrap();
        std::fs::write(&log, "").unwrap();
        // It writes on through the second before it is told to reopen.
        for _ in 0..10 {
            for _ in 0..per_file / 20 {
                writeln!(file, "{{\"n\": {n}}}").unwrap();
                n += 1;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        writeln!(file, "{{\"n\": {n}}}").unwrap();
        n += 1;
        // The next rotation comes once this file is being read.
        let caught_up = wait_until(Duration::from_secs(20), || lines(&dir.path().join("out.jsonl")).len() >= n);
        assert!(caught_up, "rotation {r}: {} of {n}\n{}", lines(&dir.path().join("out.jsonl")).len(), fbp.log());
    }
    let out = dir.path().join("out.jsonl");
    let all = wait_until(Duration::from_secs(30), || lines(&out).len() >= n);
    let log_text = fbp.stop();
    let got: Vec<u64> = lines(&out)
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["n"].as_u64().unwrap())
        .collect();
    assert!(all, "{} of {n} lines\n{log_text}", got.len());
    let mut sorted = got.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!((got.len(), sorted.len()), (n, n), "every line once");
}
