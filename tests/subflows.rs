//! Subflows (`type = "flow:PATH"`, nested) and `workers = N`, through the binary.

use crate::util::{fbp, lines, root, stderr, stdout, tempdir, write};

const INNER: &str = r#"[flow]
name = "inner"
connections = ["double -> tag"]
[ports]
in = "double.in"
out = "tag.out"
[components.double]
type = "map"
config = { expr = ".n * 2 | {n: .}" }
[components.tag]
type = "map"
config = { expr = ". + {tagged: true}" }
"#;

const MIDDLE: &str = r#"[flow]
name = "middle"
connections = ["keep -> inner"]
[ports]
in = "keep.in"
out = "inner.out"
[components.keep]
type = "filter"
config = { expr = ".n % 2 == 1" }
[components.inner]
type = "flow:inner.toml"
"#;

const OUTER: &str = r#"[flow]
name = "outer"
connections = ["src -> mid", "mid.out -> sink"]
[components.src]
type = "inject"
config = { messages = [{n = 1}, {n = 2}, {n = 3}, {n = 4}, {n = 5}] }
[components.mid]
type = "flow:lib/middle.toml"
[components.sink]
type = "file-write"
config = { path = "out.jsonl", format = "lines" }
"#;

fn nested(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::create_dir(dir.join("lib")).unwrap();
    write(&dir.join("lib"), "inner.toml", INNER);
    write(&dir.join("lib"), "middle.toml", MIDDLE);
    write(dir, "outer.toml", OUTER)
}

#[test]
fn a_subflow_nested_twice_checks_graphs_and_runs() {
    let dir = tempdir();
    let outer = nested(dir.path());
    let check = fbp().arg("check").arg(&outer).output().unwrap();
    assert!(check.status.success(), "{}", stderr(&check));
    assert!(stdout(&check).contains("ok (5 components, 4 connections)"), "{}", stdout(&check));

    let graph = fbp().args(["graph", "--format", "dot"]).arg(&outer).output().unwrap();
    let dot = stdout(&graph);
    assert!(dot.contains("\"mid/inner/double\" -> \"mid/inner/tag\""), "{dot}");
    assert!(dot.contains("\"src\" -> \"mid/keep\""), "{dot}");

    let run = fbp().arg("run").arg(&outer).output().unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(
        lines(&dir.path().join("out.jsonl")),
        [r#"{"n":2,"tagged":true}"#, r#"{"n":6,"tagged":true}"#, r#"{"n":10,"tagged":true}"#]
    );
    assert!(stderr(&run).contains("\nmid/inner/double "), "inner components are named in the summary");
}

#[test]
fn subflow_errors_name_the_inner_file_and_unknown_exports() {
    let dir = tempdir();
    let outer = nested(dir.path());
    write(
        &dir.path().join("lib"),
        "inner.toml",
        &INNER.replace("type = \"map\"\nconfig = { expr = \". +", "type = \"mapp\"\nconfig = { expr = \". +"),
    );
    let o = fbp().arg("check").arg(&outer).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("error: subflow `lib/middle.toml` does not load (1 error)"), "{err}");
    assert!(err.contains("inner.toml` does not load (1 error)"), "the help names the inner file: {err}");

    let dir = tempdir();
    let outer = nested(dir.path());
    write(dir.path(), "outer.toml", &OUTER.replace("mid.out -> sink", "mid.output -> sink"));
    let o = fbp().arg("check").arg(&outer).output().unwrap();
    let err = stderr(&o);
    assert!(err.contains("subflow `mid` exports no out-port `output`"), "{err}");
    assert!(err.contains("did you mean `out`?"), "{err}");
}

#[test]
fn a_subflow_that_includes_itself_is_refused() {
    let dir = tempdir();
    let f = write(dir.path(), "loop.toml", "[flow]\nname = \"loop\"\n[components.me]\ntype = \"flow:loop.toml\"\n");
    let o = fbp().arg("check").arg(&f).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("includes itself"), "{}", stderr(&o));
}

#[test]
fn the_example_subflow_flow_runs() {
    let dir = tempdir();
    let sample = std::fs::read_to_string(root().join("flows/subflows.toml")).unwrap();
    let finite = sample.replace("interval = \"500ms\" }", "interval = \"1ms\", count = 40, seed = 3 }");
    assert_ne!(sample, finite);
    std::fs::create_dir(dir.path().join("lib")).unwrap();
    for f in ["celsius.toml", "hot-readings.toml"] {
        std::fs::copy(root().join("flows/lib").join(f), dir.path().join("lib").join(f)).unwrap();
    }
    let flow = write(dir.path(), "subflows.toml", &finite);
    let o = fbp().arg("run").arg(&flow).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(!out.is_empty(), "hot readings printed");
    for l in out.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert!(v["value"].as_f64().unwrap() > 28.0 && v["fahrenheit"].is_number(), "{l}");
    }
}

#[test]
fn workers_compete_for_messages_and_each_is_processed_once() {
    let dir = tempdir();
    let flow = write(
        dir.path(),
        "w.toml",
        "[flow]\nname = \"w\"\nconnections = [\"src -> work\", \"work -> sink\"]\n\
         [components.src]\ntype = \"counter\"\nconfig = { interval = \"0s\", max_count = 20000 }\n\
         [components.work]\ntype = \"map\"\nworkers = 3\nconfig = { expr = \".count\" }\n\
         [components.sink]\ntype = \"file-write\"\nconfig = { path = \"out.jsonl\", format = \"lines\" }\n",
    );
    let o = fbp().arg("run").arg(&flow).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let mut got: Vec<u64> = lines(&dir.path().join("out.jsonl")).iter().map(|l| l.parse().unwrap()).collect();
    got.sort_unstable();
    assert_eq!(got, (1..=20_000).collect::<Vec<_>>(), "every message exactly once");

    let stateful = write(
        dir.path(),
        "bad.toml",
        "[flow]\nname = \"b\"\n[components.w]\ntype = \"window\"\nworkers = 2\nconfig = { every = \"1s\" }\n",
    );
    let o = fbp().arg("check").arg(&stateful).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot run as several workers"), "{}", stderr(&o));
}
