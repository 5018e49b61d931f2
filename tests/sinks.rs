//! Sinks keep the batch in hand through a transient failure, through the
//! binary: an SQLite database locked by another connection, a PostgreSQL
//! statement cancelled or timed out on a lock, a connection killed while
//! idle, an HTTP server answering 503 for a while; a record the table
//! refuses goes alone to `err`; SIGTERM ends a retry wait at once. Every
//! test counts every row.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use tokio_postgres::NoTls;

use crate::postgres::{Table, URL, sql};
use crate::sockets::Running;
use crate::util::{catches, lines, logged, summary, tempdir, wait_until, write};

/// `n` JSON lines `{"n": i, "value": i + 0.5}`.
fn records(n: usize) -> String {
    (0..n).map(|i| format!("{{\"n\": {i}, \"value\": {i}.5}}\n")).collect()
}

/// A flow `read` (file-read of `in.jsonl`) -> `pace` (`rate` per 100ms;
/// none when 0) -> `store` (`ty` with `config`), whose `err` goes to `bad.jsonl`.
fn store_flow(rate: usize, ty: &str, config: &str) -> String {
    let (path, pace) = match rate {
        0 => ("\"read -> store\"".to_string(), String::new()),
        _ => (
            "\"read -> pace\", \"pace -> store\"".to_string(),
            format!("[components.pace]\ntype = \"throttle\"\nconfig = {{ rate = {rate}, per = \"100ms\" }}\n"),
        ),
    };
    format!(
        "[flow]\nname = \"sinks\"\nconnections = [{path}, \"store.err -> bad\"]\n\
         [components.read]\ntype = \"file-read\"\nconfig = {{ path = \"in.jsonl\" }}\n{pace}\
         [components.store]\ntype = \"{ty}\"\nconfig = {config}\n\
         [components.bad]\ntype = \"file-write\"\nconfig = {{ path = \"bad.jsonl\" }}\n"
    )
}

/// Waits for a flow that ends by itself (its input read whole); its log,
/// once it has exited cleanly.
fn finish(run: Running) -> String {
    let (status, log) = run.wait();
    assert!(status.success(), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    log
}

/// SIGTERM once fbp handles it; its log once it has exited cleanly, far
/// below the 10 s drain timeout a retry wait used to take.
fn stopped_at_once(run: Running) -> String {
    assert!(wait_until(Duration::from_secs(10), || catches(run.pid(), 15)), "fbp never handled SIGTERM");
    let asked = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &run.pid().to_string()]).status().unwrap().success());
    let log = finish(run);
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}: {log}");
    log
}

/// The store's counters from the summary: (errors, restarts).
fn store_counters(log: &str) -> (u64, u64) {
    (summary(log, "store", "errors").expect("a summary"), summary(log, "store", "restarts").expect("a summary"))
}

/// A folder with `store.db` holding a table `readings` of these columns, and
/// a connection of the test's own to it.
fn sqlite_table(columns: &str) -> (tempfile::TempDir, PathBuf, rusqlite::Connection) {
    let dir = tempdir();
    let db = dir.path().join("store.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    conn.execute(&format!("CREATE TABLE readings ({columns})"), []).unwrap();
    (dir, db, conn)
}

fn sqlite_count(db: &Path, table: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)).unwrap()
}

#[test]
fn sqlite_locked_by_another_connection_for_10s_loses_nothing_and_never_restarts() {
    let (dir, db, locker) = sqlite_table("n INTEGER, value REAL");
    write(dir.path(), "in.jsonl", &records(2000));
    let config = "{ path = \"store.db\", table = \"readings\", batch_size = 50, flush_interval = \"10ms\" }";
    let run = Running::start(dir.path(), &store_flow(20, "sqlite", config));
    assert!(wait_until(Duration::from_secs(30), || sqlite_count(&db, "readings") >= 100), "{}", run.log());
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let locked = Instant::now();
    // The scenario: the lock is held 10 s, past the sink's 5 s busy timeout.
    assert!(run.wait_log("Cannot write the batch", 1), "the sink never met the lock: {}", run.log());
    std::thread::sleep(Duration::from_secs(10).saturating_sub(locked.elapsed()));
    locker.execute_batch("COMMIT").unwrap();
    let log = finish(run);
    assert_eq!(sqlite_count(&db, "readings"), 2000, "{log}");
    let distinct: i64 = locker.query_row("SELECT count(DISTINCT n) FROM readings", [], |r| r.get(0)).unwrap();
    assert_eq!(distinct, 2000);
    assert_eq!(store_counters(&log), (0, 0), "{log}");
    assert_eq!(logged(&log, "Cannot write the batch").len(), 1, "one warning for the episode: {log}");
    assert_eq!(logged(&log, "Written after").len(), 1, "{log}");
}

#[test]
fn sqlite_sends_the_record_a_constraint_refuses_alone_to_err() {
    let (dir, db, _conn) = sqlite_table("n INTEGER UNIQUE, value REAL CHECK (value >= 0)");
    let mut input = records(300);
    input.push_str("{\"n\": 7, \"value\": 1.0}\n{\"n\": 1000, \"value\": -1}\n");
    write(dir.path(), "in.jsonl", &input);
    let config = "{ path = \"store.db\", table = \"readings\", batch_size = 100 }";
    let log = finish(Running::start(dir.path(), &store_flow(1000, "sqlite", config)));
    assert_eq!(sqlite_count(&db, "readings"), 300, "{log}");
    let bad = lines(&dir.path().join("bad.jsonl"));
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert!(bad[0].contains("UNIQUE") && bad[0].contains("\"n\":7"), "{}", bad[0]);
    assert!(bad[1].contains("CHECK") && bad[1].contains("\"n\":1000"), "{}", bad[1]);
    assert_eq!(store_counters(&log), (2, 0), "{log}");
}

/// A connection of the test's own to the test database, kept open (to hold
/// a lock across steps).
struct Pg {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl Pg {
    fn connect() -> Pg {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client = rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(URL, NoTls).await.expect("PostgreSQL on 127.0.0.1:5432");
            tokio::spawn(conn);
            client
        });
        Pg { rt, client }
    }

    fn run(&self, sql: &str) {
        self.rt.block_on(self.client.batch_execute(sql)).unwrap();
    }

    fn number(&self, sql: &str) -> i64 {
        self.rt.block_on(self.client.query_one(sql, &[])).unwrap().get(0)
    }
}

/// A private table with these columns, dropped when the guard goes.
fn table(what: &str, columns: &str) -> Table {
    let t = Table::new(&format!("sinks_{what}"));
    sql(&format!("CREATE TABLE {} ({columns})", t.0));
    t
}

/// The sink's config for `table` on `url`.
fn pg_config(url: &str, table: &str) -> String {
    format!(
        "{{ url = \"{url}\", table = \"{table}\", batch_size = 50, flush_interval = \"10ms\", reconnect = \"50ms..500ms\" }}"
    )
}

/// Runs 2 000 records into `table` through `url` while the test holds a
/// lock on the table: `during` runs with the lock held (the sink blocked);
/// then the lock goes and every row must be there, once.
fn pg_through_a_lock(table: &Table, url: &str, during: impl FnOnce(&Running, &Pg)) -> String {
    let count = format!("SELECT count(*) FROM {}", table.0);
    let log = pg_paced(table, url, |run, pg| {
        // EXCLUSIVE blocks inserts, not the test's counting.
        pg.run(&format!("BEGIN; LOCK TABLE {} IN EXCLUSIVE MODE", table.0));
        during(run, pg);
        let held = pg.number(&count);
        pg.run("COMMIT");
        assert!(held < 2000, "the lock held nothing back");
    });
    assert_eq!(logged(&log, "Written after").len(), 1, "{log}");
    log
}

#[test]
fn postgres_insert_cancelled_by_an_admin_is_written_again() {
    let table = table("cancel", "n BIGINT, value DOUBLE PRECISION");
    let log = pg_through_a_lock(&table, URL, |run, pg| {
        let blocked = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO%{}%'",
            table.0
        );
        assert!(wait_until(Duration::from_secs(20), || pg.number(&blocked) == 1), "no INSERT waits on the lock");
        let cancel = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO%{}%' \
             AND pg_cancel_backend(pid)",
            table.0
        );
        assert_eq!(pg.number(&cancel), 1);
        assert!(run.wait_log("Cannot write the batch", 1), "{}", run.log());
    });
    let warned = logged(&log, "Cannot write the batch");
    assert_eq!(warned.len(), 1, "{log}");
    assert!(warned[0]["error"].as_str().unwrap().contains("canceling statement"), "{warned:?}");
    assert!(logged(&log, "The connection broke").is_empty(), "nothing was in doubt: {log}");
}

#[test]
fn postgres_lock_timeout_is_waited_out() {
    let table = table("lock_timeout", "n BIGINT, value DOUBLE PRECISION");
    let url = format!("{URL}?options=-c%20lock_timeout%3D300ms");
    let log = pg_through_a_lock(&table, &url, |run, _| {
        assert!(run.wait_log("lock timeout", 1), "{}", run.log());
        // The scenario: the lock outlasts several attempts of 300 ms each.
        std::thread::sleep(Duration::from_millis(1500));
    });
    let warned = logged(&log, "Cannot write the batch");
    assert_eq!(warned.len(), 1, "one warning for the episode: {log}");
    assert!(warned[0]["error"].as_str().unwrap().contains("lock timeout"), "{warned:?}");
}

#[test]
fn postgres_sends_the_record_a_constraint_refuses_alone_to_err() {
    let table = table("check", "n BIGINT UNIQUE, value DOUBLE PRECISION CHECK (value >= 0)");
    let dir = tempdir();
    let mut input = records(300);
    input.push_str("{\"n\": 1000, \"value\": -1}\n");
    write(dir.path(), "in.jsonl", &input);
    let config = format!("{{ url = \"{URL}\", table = \"{}\", batch_size = 100 }}", table.0);
    let log = finish(Running::start(dir.path(), &store_flow(1000, "postgres", &config)));
    let pg = Pg::connect();
    assert_eq!(pg.number(&format!("SELECT count(*) FROM {}", table.0)), 300, "{log}");
    let bad = lines(&dir.path().join("bad.jsonl"));
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(bad[0].contains("check constraint") && bad[0].contains("\"n\":1000"), "{}", bad[0]);
    assert_eq!(store_counters(&log), (1, 0), "{log}");
}

/// An HTTP server on its own thread: answers `POST /` 503 while `refusals`
/// lasts, then 200, keeping each accepted body.
struct Refusing {
    addr: SocketAddr,
    accepted: Arc<Mutex<Vec<String>>>,
    calls: Arc<AtomicUsize>,
    _rt: tokio::runtime::Runtime,
}

impl Refusing {
    fn start(refusals: usize) -> Refusing {
        let (accepted, calls) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicUsize::new(0)));
        let (a, c) = (accepted.clone(), calls.clone());
        let route = axum::routing::post(move |body: String| async move {
            if c.fetch_add(1, Ordering::SeqCst) < refusals {
                return StatusCode::SERVICE_UNAVAILABLE;
            }
            a.lock().unwrap().push(body);
            StatusCode::OK
        });
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(async move { axum::serve(listener, axum::Router::new().route("/", route)).await });
        Refusing { addr, accepted, calls, _rt: rt }
    }
}

/// A flow `read` -> `push` (http-request to `server`, no retries for a 5xx
/// that is not a refusal) -> `out`, `push.err` -> `bad`.
fn push_flow(server: &Refusing) -> String {
    format!(
        "[flow]\nname = \"push\"\nconnections = [\"read -> push\", \"push -> out\", \"push.err -> bad\"]\n\
         [components.read]\ntype = \"file-read\"\nconfig = {{ path = \"in.jsonl\" }}\n\
         [components.push]\ntype = \"http-request\"\nconfig = {{ url = \"http://{}/\", retries = 0, \
         backoff = \"20ms..100ms\", concurrency = 1 }}\n\
         [components.out]\ntype = \"file-write\"\nconfig = {{ path = \"out.jsonl\" }}\n\
         [components.bad]\ntype = \"file-write\"\nconfig = {{ path = \"bad.jsonl\" }}\n",
        server.addr
    )
}

#[test]
fn http_request_waits_out_503_and_delivers_every_message_once() {
    let server = Refusing::start(6);
    let dir = tempdir();
    write(dir.path(), "in.jsonl", &records(20));
    let log = finish(Running::start(dir.path(), &push_flow(&server)));
    let mut got: Vec<i64> = server
        .accepted
        .lock()
        .unwrap()
        .iter()
        .map(|b| serde_json::from_str::<serde_json::Value>(b).unwrap()["n"].as_i64().unwrap())
        .collect();
    got.sort_unstable();
    assert_eq!(got, (0..20).collect::<Vec<_>>(), "each message accepted once");
    assert_eq!(server.calls.load(Ordering::SeqCst), 26);
    assert_eq!(lines(&dir.path().join("out.jsonl")).len(), 20);
    assert!(lines(&dir.path().join("bad.jsonl")).is_empty());
    let (errors, restarts) =
        (summary(&log, "push", "errors").expect("a summary"), summary(&log, "push", "restarts").expect("a summary"));
    assert_eq!((errors, restarts), (0, 0), "{log}");
    assert_eq!(logged(&log, "Cannot write the batch").len(), 1, "{log}");
}

#[test]
fn http_request_sigterm_during_the_retry_wait_ends_at_once() {
    let server = Refusing::start(usize::MAX);
    let dir = tempdir();
    write(dir.path(), "in.jsonl", &records(3));
    let run = Running::start(dir.path(), &push_flow(&server));
    assert!(run.wait_log("Cannot write the batch", 1), "{}", run.log());
    let log = stopped_at_once(run);
    assert_eq!(logged(&log, "Shutting down with a batch not written").len(), 1, "{log}");
    assert!(lines(&dir.path().join("out.jsonl")).is_empty());
    assert!(server.accepted.lock().unwrap().is_empty());
}

#[test]
fn postgres_sigterm_while_the_server_is_away_ends_at_once() {
    let table = table("away", "n BIGINT, value DOUBLE PRECISION");
    let proxy = fbp_runtime::testbed::Proxy::start("127.0.0.1:5432".parse::<SocketAddr>().unwrap()).unwrap();
    let dir = tempdir();
    // Unpaced, so what is queued at shutdown reaches the sink at once.
    write(dir.path(), "in.jsonl", &records(20_000));
    let url = format!("postgresql://postgres@127.0.0.1:{}/test", proxy.port());
    let run = Running::start(dir.path(), &store_flow(0, "postgres", &pg_config(&url, &table.0)));
    let pg = Pg::connect();
    let count = format!("SELECT count(*) FROM {}", table.0);
    assert!(wait_until(Duration::from_secs(30), || pg.number(&count) >= 100), "{}", run.log());
    proxy.cut();
    assert!(run.wait_log("Cannot write the batch", 1), "{}", run.log());
    let log = stopped_at_once(run);
    assert_eq!(logged(&log, "Shutting down with a batch not written").len(), 1, "{log}");
    let rows = pg.number(&count);
    assert!(rows < 20_000, "{rows} rows");
    assert_eq!(pg.number(&format!("SELECT count(DISTINCT n) FROM {}", table.0)), rows, "no row twice");
    assert_eq!(store_counters(&log).1, 0, "{log}");
}

#[test]
fn postgres_connection_killed_while_idle_is_not_in_doubt() {
    let table = table("idle_kill", "n BIGINT, value DOUBLE PRECISION");
    let log = pg_paced(&table, URL, |run, pg| {
        let kill = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle' AND query LIKE 'INSERT INTO%{}%' \
             AND pg_terminate_backend(pid)",
            table.0
        );
        assert!(wait_until(Duration::from_secs(20), || pg.number(&kill) == 1), "no idle sink connection");
        assert!(run.wait_log("Reconnected.", 1), "{}", run.log());
    });
    assert!(logged(&log, "The connection broke before a COMMIT").is_empty(), "nothing was in doubt: {log}");
    assert_eq!(logged(&log, "Connection lost").len(), 1, "{log}");
}

/// Runs 2 000 paced records into `table` through `url`; `during` runs once
/// 100 are in. Every row must be there, once, without a restart or an error.
fn pg_paced(table: &Table, url: &str, during: impl FnOnce(&Running, &Pg)) -> String {
    let dir = tempdir();
    write(dir.path(), "in.jsonl", &records(2000));
    let pg = Pg::connect();
    let count = format!("SELECT count(*) FROM {}", table.0);
    let run = Running::start(dir.path(), &store_flow(20, "postgres", &pg_config(url, &table.0)));
    assert!(wait_until(Duration::from_secs(30), || pg.number(&count) >= 100), "{}", run.log());
    during(&run, &pg);
    let log = finish(run);
    assert_eq!(pg.number(&count), 2000, "{log}");
    assert_eq!(pg.number(&format!("SELECT count(DISTINCT n) FROM {}", table.0)), 2000);
    assert_eq!(store_counters(&log), (0, 0), "{log}");
    log
}

#[test]
fn sqlite_locked_before_the_flow_starts_is_waited_out() {
    let (dir, db, locker) = sqlite_table("n INTEGER, value REAL");
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    write(dir.path(), "in.jsonl", &records(200));
    let run = Running::start(dir.path(), &store_flow(0, "sqlite", "{ path = \"store.db\", table = \"readings\" }"));
    // Opening waits 5 s on the lock, then the attempt is retried.
    assert!(run.wait_log("Cannot write the batch", 1), "{}", run.log());
    locker.execute_batch("COMMIT").unwrap();
    let log = finish(run);
    assert_eq!(sqlite_count(&db, "readings"), 200, "{log}");
    assert_eq!(store_counters(&log), (0, 0), "{log}");
}

/// A RabbitMQ queue of the test's own that holds at most `max` messages and
/// refuses (nacks) publishes past that (`reject-publish`); deleted on drop.
struct SmallQueue {
    rt: tokio::runtime::Runtime,
    _conn: lapin::Connection,
    channel: lapin::Channel,
    name: String,
}

impl SmallQueue {
    fn declare(max: i32) -> SmallQueue {
        use lapin::types::{AMQPValue, FieldTable};
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let name = format!("fbp-sinks-small-{}", std::process::id());
        let (conn, channel) = rt.block_on(async {
            let url = "amqp://guest:guest@127.0.0.1:5672/%2f";
            let conn = lapin::Connection::connect(url, Default::default()).await.expect("RabbitMQ on 5672");
            let channel = conn.create_channel().await.unwrap();
            let mut args = FieldTable::default();
            args.insert("x-max-length".into(), AMQPValue::LongInt(max));
            args.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
            let _ = channel.queue_delete(name.as_str().into(), Default::default()).await;
            channel.queue_declare(name.as_str().into(), Default::default(), args).await.unwrap();
            (conn, channel)
        });
        SmallQueue { rt, _conn: conn, channel, name }
    }

    /// Takes what the queue holds: the `n` of each body.
    fn drain(&self) -> Vec<i64> {
        self.rt.block_on(async {
            let mut got = Vec::new();
            let options = lapin::options::BasicGetOptions { no_ack: true };
            while let Some(m) = self.channel.basic_get(self.name.as_str().into(), options).await.unwrap() {
                got.push(serde_json::from_slice::<serde_json::Value>(&m.delivery.data).unwrap()["n"].as_i64().unwrap());
            }
            got
        })
    }
}

impl Drop for SmallQueue {
    fn drop(&mut self) {
        let _ = self.rt.block_on(self.channel.queue_delete(self.name.as_str().into(), Default::default()));
    }
}

#[test]
fn amqp_publish_publishes_what_the_broker_nacks_again() {
    let queue = SmallQueue::declare(20);
    let dir = tempdir();
    write(dir.path(), "in.jsonl", &records(200));
    let config = format!("{{ routing_key = \"{}\", batch_size = 50, reconnect = \"20ms..200ms\" }}", queue.name);
    let run = Running::start(dir.path(), &store_flow(0, "amqp-publish", &config));
    assert!(run.wait_log("Cannot write the batch", 1), "the broker never refused: {}", run.log());
    let mut got = Vec::new();
    let all = wait_until(Duration::from_secs(60), || {
        got.extend(queue.drain());
        got.len() >= 200
    });
    assert!(all, "{} of 200: {}", got.len(), run.log());
    let log = finish(run);
    got.extend(queue.drain());
    got.sort_unstable();
    assert_eq!(got, (0..200).collect::<Vec<_>>(), "each message once");
    assert_eq!(store_counters(&log), (0, 0), "{log}");
    assert!(lines(&dir.path().join("bad.jsonl")).is_empty());
}

#[test]
fn mqtt_publish_sigterm_while_the_broker_is_away_ends_at_once_counting_what_it_held() {
    let dir = tempdir();
    let port = fbp_runtime::testbed::free_port();
    let flow = format!(
        "[flow]\nconnections = [\"ticks.out -> store.in\"]\n\
         [components.ticks]\ntype = \"counter\"\nconfig = {{ interval = \"20ms\" }}\n\
         [components.store]\ntype = \"mqtt-publish\"\nconfig = {{ url = \"mqtt://127.0.0.1:{port}\", topic = \"t\" }}\n"
    );
    let run = Running::start(dir.path(), &flow);
    assert!(run.wait_log("connection", 1), "{}", run.log());
    let log = stopped_at_once(run);
    let sent = summary(&log, "ticks", "sent").unwrap();
    assert!(sent > 0, "{log}");
    assert_eq!(summary(&log, "store", "dropped"), Some(sent), "every message held is counted: {log}");
}
