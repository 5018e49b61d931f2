//! The command line: every command, flags, exit codes, stdout for data and stderr for logs.

use crate::util::{fbp, root, run_in, stderr, stdout, tempdir, write};

#[test]
fn version_and_help_on_every_command() {
    let v = fbp().arg("--version").output().unwrap();
    assert!(v.status.success());
    assert!(stdout(&v).starts_with("fbp "), "{}", stdout(&v));
    for cmd in ["run", "check", "components", "describe", "graph", "launch"] {
        let o = fbp().args([cmd, "--help"]).output().unwrap();
        assert!(o.status.success(), "{cmd} --help");
        assert!(stdout(&o).contains("Usage: fbp"), "{cmd} --help: {}", stdout(&o));
        assert!(stdout(&o).contains("--log-level"), "{cmd} --help lacks --log-level");
    }
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(fbp().arg("frobnicate").output().unwrap().status.code(), Some(2));
    assert_eq!(fbp().args(["run"]).output().unwrap().status.code(), Some(2));
    let o = fbp().args(["describe", "sensor-sm"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("did you mean `sensor-sim`?"), "{}", stderr(&o));
}

#[test]
fn components_lists_one_line_per_type() {
    let o = fbp().arg("components").output().unwrap();
    assert!(o.status.success());
    let out = stdout(&o);
    for name in
        ["counter", "sensor-sim", "inject", "map", "filter", "window", "console", "null", "file-write", "sqlite"]
    {
        assert!(out.lines().any(|l| l.starts_with(&format!("{name} "))), "`{name}` missing from:\n{out}");
    }
}

#[test]
fn describe_shows_ports_config_delivery_and_example() {
    let o = fbp().args(["describe", "sensor-sim"]).output().unwrap();
    assert!(o.status.success());
    let out = stdout(&o);
    for needle in ["Out-ports:", "err", "Config:", "interval (duration, default \"1s\")", "Delivery:", "Example:"] {
        assert!(out.contains(needle), "`{needle}` missing from:\n{out}");
    }
}

#[test]
fn describe_says_when_window_acknowledges_and_what_a_crash_loses() {
    let o = fbp().args(["describe", "window"]).output().unwrap();
    assert!(o.status.success());
    let out = stdout(&o);
    let acks = out.lines().find(|l| l.starts_with("Acknowledgements: ")).unwrap_or_else(|| panic!("{out}"));
    assert!(acks.contains("on_fold") && acks.contains("lost on a"), "{acks}");
    assert!(out.contains("ack (\"on_fold\" | \"on_emit\", default \"on_fold\")"), "{out}");
}

#[test]
fn check_accepts_every_flow_in_flows() {
    let mut checked = 0;
    let lib = std::fs::read_dir(root().join("flows/lib")).unwrap();
    let scale_out = std::fs::read_dir(root().join("flows/scale-out")).unwrap();
    for entry in std::fs::read_dir(root().join("flows")).unwrap().chain(lib).chain(scale_out) {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let o = fbp().arg("check").arg(&path).output().unwrap();
            assert!(o.status.success(), "{}:\n{}", path.display(), stderr(&o));
            assert!(stdout(&o).contains(": ok ("), "{}", stdout(&o));
            checked += 1;
        }
    }
    assert!(checked >= 1);
}

#[test]
fn check_reports_counts_on_success() {
    let o = fbp().current_dir(root()).args(["check", "flows/sensor.toml"]).output().unwrap();
    assert_eq!(stdout(&o).trim(), "flows/sensor.toml: ok (5 components, 4 connections)");
}

#[test]
fn graph_renders_dot_and_mermaid() {
    let dot = fbp().current_dir(root()).args(["graph", "flows/sensor.toml", "--format", "dot"]).output().unwrap();
    assert!(dot.status.success());
    let text = stdout(&dot);
    assert!(text.starts_with("digraph \"sensor\""), "{text}");
    assert!(text.contains("\"avg\" -> \"store\" [label=\"out -> in\"]"), "{text}");
    let mermaid = fbp()
        .current_dir(root())
        .args(["graph", "flows/sensor.toml"])
        .env("FBP_GRAPH_FORMAT", "mermaid")
        .output()
        .unwrap();
    let text = stdout(&mermaid);
    assert!(text.starts_with("flowchart LR"), "{text}");
    assert_eq!(text.matches("-->").count(), 4, "{text}");
}

#[test]
fn launch_prints_an_equivalent_flow_that_checks() {
    let dir = tempdir();
    let o = run_in(dir.path(), &["launch", "--print-flow", "sensor-sim count=100 ! map expr=\".value\" ! console"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let flow = stdout(&o);
    assert!(flow.contains("connections = [\n  \"sensor-sim -> map\",\n  \"map -> console\",\n]"), "{flow}");
    let path = write(dir.path(), "launched.toml", &flow);
    let check = fbp().arg("check").arg(&path).output().unwrap();
    assert!(check.status.success(), "{}", stderr(&check));
}

#[test]
fn launch_runs_and_data_goes_to_stdout_logs_to_stderr() {
    let dir = tempdir();
    let o = run_in(dir.path(), &["launch", "inject messages=[1,2,3] ! map expr=\".+1\" ! console"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "2\n3\n4\n");
    let log = stderr(&o);
    assert!(log.contains("INFO console (console) writes to stdout."), "{log}");
    // The table at the end, without its `ran` column.
    let table: Vec<String> = log
        .lines()
        .skip_while(|l| !l.starts_with("component "))
        .map(|l| l.rsplit_once("  ").map_or(l, |(row, _)| row).trim_end().to_string())
        .collect();
    let expected = [
        "component  type     in  out/written  errors  dead-lettered  dropped  restarts",
        "inject     inject    0            3       0              0        0         0",
        "map        map       3            3       0              0        0         0",
        "console    console   3            3       0              0        0         0",
    ];
    assert_eq!(table, expected, "{log}");
    assert!(!log.contains("fbp_runtime::"), "module paths are not shown: {log}");
}

#[test]
fn a_long_run_says_how_it_is_flowing() {
    let dir = tempdir();
    let o = run_in(dir.path(), &["launch", "--status-interval", "100ms", "counter interval=20ms max_count=25 ! null"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let status = stderr(&o).lines().filter(|l| l.contains("INFO Flowing. taken=")).count();
    assert!(status >= 1, "{}", stderr(&o));
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempdir();
    let o = fbp()
        .current_dir(dir.path())
        .args(["--log-format", "json", "launch", "inject messages=[1] ! null"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().filter(|l| !l.is_empty()).collect();
    assert!(!lines.is_empty());
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}"));
        assert!(v.get("level").is_some(), "{l}");
    }
}

#[test]
fn log_level_flag_and_env_twin_silence_info() {
    let dir = tempdir();
    let o = fbp()
        .current_dir(dir.path())
        .args(["--log-level", "error", "launch", "inject messages=[1] ! null"])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(stderr(&o), "");
    let o = fbp()
        .current_dir(dir.path())
        .env("FBP_LOG_LEVEL", "error")
        .args(["launch", "inject messages=[1] ! null"])
        .output()
        .unwrap();
    assert_eq!(stderr(&o), "");
}

#[test]
fn a_flow_that_cannot_start_exits_1() {
    let dir = tempdir();
    let flow = write(
        dir.path(),
        "f.toml",
        "[flow]\nname = \"f\"\nconnections = [\"i -> s\"]\n[components.i]\ntype = \"inject\"\nconfig = { messages = [{a = 1}] }\n\
         [components.s]\ntype = \"sqlite\"\nconfig = { path = \"/proc/no/such/dir/x.db\", table = \"t\" }\nrestart = \"never\"\n",
    );
    let o = fbp().arg("run").arg(&flow).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let log = stderr(&o);
    assert_eq!(
        log.lines().last(),
        Some(
            "error: component `s` failed: cannot open sqlite database `/proc/no/such/dir/x.db`: No such file or directory (os error 2)"
        ),
        "{log}"
    );
    assert_eq!(log.matches("component `s` failed:").count(), 1, "said once: {log}");
}

#[test]
fn check_reports_what_only_a_components_build_checks_without_showing_secrets() {
    let dir = tempdir();
    let flow = write(
        dir.path(),
        "f.toml",
        "[flow]\nname = \"f\"\n[components.w]\ntype = \"window\"\n\
         config = { every = \"1s\", aggregates = [\"avg\", \"${AGG}\"] }\n",
    );
    let o = fbp().arg("check").arg(&flow).env("AGG", "hunter2").output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("error: invalid config for `w` (window)"), "{err}");
    assert!(err.contains("unknown aggregate `***`"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn new_writes_a_skeleton_that_checks_once_its_todos_are_filled() {
    let dir = tempdir();
    let o = run_in(dir.path(), &["new", "counter ! map ! file-write", "-o", "flow.toml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(dir.path().join("flow.toml")).unwrap();
    assert!(text.contains("[components.map.config]\n# The jq program"), "{text}");
    assert!(text.contains("# max_count = 0\n"), "defaults commented out: {text}");
    let todo: Vec<&str> = text.lines().filter(|l| !l.starts_with('#') && l.ends_with("= \"TODO\"")).collect();
    assert_eq!(todo, ["expr = \"TODO\"", "path = \"TODO\""], "the required keys to fill in: {text}");
    let o = run_in(dir.path(), &["new", "counter ! console", "-o", "flow.toml"]);
    assert_eq!(o.status.code(), Some(1), "an existing file is kept");
    assert!(stderr(&o).contains("cannot write `flow.toml`"), "{}", stderr(&o));
    std::fs::write(
        dir.path().join("flow.toml"),
        text.replace("expr = \"TODO\"", "expr = \".\"").replace("path = \"TODO\"", "path = \"out.jsonl\""),
    )
    .unwrap();
    let o = run_in(dir.path(), &["validate", "flow.toml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run_in(dir.path(), &["new", "counter ! consol"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stderr(&o), "error: unknown component type `consol`; did you mean `console`?\n");
}

#[test]
fn day_one_verbs_aliases_completions_and_json_descriptions() {
    let dir = tempdir();
    let o = run_in(dir.path(), &["list"]);
    assert!(o.status.success() && stdout(&o).starts_with("counter "), "{}", stdout(&o));
    let o = run_in(dir.path(), &["lint", &root().join("flows/sensor.toml").to_string_lossy()]);
    assert!(o.status.success(), "{}", stderr(&o));
    for shell in ["bash", "zsh", "fish"] {
        let o = run_in(dir.path(), &["completions", shell]);
        assert!(o.status.success() && stdout(&o).contains("describe"), "{shell}");
    }
    let o = run_in(dir.path(), &["describe", "counter", "--format", "json"]);
    let d: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(d["kind"], "source");
    assert_eq!(d["config"][0]["name"], "interval");
    assert_eq!(d["config"][0]["default"], "\"1s\"");
    let o = run_in(dir.path(), &["chek"]);
    assert!(stderr(&o).contains("a similar subcommand exists: 'check'"), "{}", stderr(&o));
    let o = run_in(dir.path(), &["start"]);
    assert!(!stderr(&o).contains("similar subcommand"), "{}", stderr(&o));
}

/// A counter of 3 into the console, plus an unconnected console (a warning).
const COUNT_FLOW: &str = "[flow]\nname = \"c\"\nconnections = [\"ticks -> show\"]\n\
    [components.ticks]\ntype = \"counter\"\nconfig = { interval = \"1ms\", max_count = \"${MAX:-3}\" }\n\
    [components.show]\ntype = \"console\"\n";

#[test]
fn deny_warnings_turns_check_and_run_warnings_into_exit_2() {
    let dir = tempdir();
    write(dir.path(), "w.toml", &format!("{COUNT_FLOW}[components.lone]\ntype = \"console\"\n"));
    let check = fbp().current_dir(dir.path()).args(["check", "w.toml"]).output().unwrap();
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));
    for args in [&["check", "--deny-warnings", "w.toml"][..], &["run", "--deny-warnings", "w.toml"]] {
        let o = fbp().current_dir(dir.path()).args(args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert_eq!(stdout(&o), "", "{args:?}: nothing ran");
        let err = stderr(&o);
        assert!(err.starts_with("warning: `lone` is not connected to anything\n"), "{err}");
        assert!(err.ends_with("error: could not load `w.toml`: warnings denied (--deny-warnings)\n"), "{err}");
    }
}

#[test]
fn set_replaces_a_config_key_and_names_itself_with_a_suggestion_when_wrong() {
    let dir = tempdir();
    write(dir.path(), "c.toml", COUNT_FLOW);
    let o = fbp().current_dir(dir.path()).args(["run", "--set", "ticks.max_count=5", "c.toml"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 5, "{}", stdout(&o));
    let o = fbp()
        .current_dir(dir.path())
        .args(["run", "--set", "ticks.max_cont=5", "--set", "tick.max_count=5", "c.toml"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        "error: `--set ticks.max_cont=5`: `counter` has no config key `max_cont`\n  --> c.toml\n  \
         = help: did you mean `max_count`?\n\n\
         error: `--set tick.max_count=5`: no component `tick` in the flow\n  --> c.toml\n  \
         = help: did you mean `ticks`?\n\n\
         error: could not load `c.toml`: 2 errors\n"
    );
}

#[test]
fn env_file_feeds_variables_and_the_environment_wins() {
    let dir = tempdir();
    write(dir.path(), "c.toml", COUNT_FLOW);
    write(dir.path(), "vars.env", "# how many\nMAX=\"4\"\n");
    let o = fbp().current_dir(dir.path()).env_remove("MAX").args(["run", "--env-file", "vars.env", "c.toml"]).output();
    let o = o.unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 4, "{}", stdout(&o));
    let o = fbp().current_dir(dir.path()).env("MAX", "2").args(["run", "--env-file", "vars.env", "c.toml"]).output();
    assert_eq!(stdout(&o.unwrap()).lines().count(), 2);
    write(dir.path(), "bad.env", "MAX=1\nnot a pair\n");
    let o = fbp().current_dir(dir.path()).args(["check", "--env-file", "bad.env", "c.toml"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).starts_with("error: `bad.env` line 2: expected `KEY=VALUE`, found `not a pair`\n"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn color_always_styles_diagnostics_and_never_or_no_color_does_not() {
    let dir = tempdir();
    write(dir.path(), "bad.toml", "[flow]\nname = 1\n");
    let run = |args: &[&str], no_color: bool| {
        let mut cmd = fbp();
        cmd.current_dir(dir.path()).args(args);
        if no_color {
            cmd.env("NO_COLOR", "1");
        } else {
            cmd.env_remove("NO_COLOR");
        }
        stderr(&cmd.output().unwrap())
    };
    assert!(run(&["check", "--color", "always", "bad.toml"], false).contains("\x1b["));
    assert!(!run(&["check", "--color", "never", "bad.toml"], false).contains('\x1b'));
    assert!(!run(&["check", "bad.toml"], true).contains('\x1b'), "not a terminal, NO_COLOR set");
}

#[test]
fn launch_errors_point_into_the_pipeline_as_typed() {
    let dir = tempdir();
    let o = run_in(dir.path(), &["launch", "sensor-sim cont=5 ! map expr='.value |' ! consol"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        "error: unknown config key `cont`\n --> <launch>:1:12\n  |\n\
         1 | sensor-sim cont=5 ! map expr='.value |' ! consol\n  |            ^^^^ not a key of `sensor-sim`\n  |\n  \
         = help: did you mean `count`?\n\n\
         error: `expr` is not a valid jq program\n --> <launch>:1:30\n  |\n\
         1 | sensor-sim cont=5 ! map expr='.value |' ! consol\n  |                              ^^^^^^^^^^ \
         invalid jq program: expected term at `end of program`\n\n\
         error: unknown component type `consol`\n --> <launch>:1:43\n  |\n\
         1 | sensor-sim cont=5 ! map expr='.value |' ! consol\n  |                                           ^^^^^^ not a known type\n  |\n  \
         = help: did you mean `console`?\n\n\
         error: could not load `<launch>`: 3 errors\n"
    );
}

#[test]
fn relay_errors_point_at_the_setting_in_the_uri() {
    let dir = tempdir();
    let o = run_in(dir.path(), &["relay", "mqtt://127.0.0.1:1883/a?qos=7", "-"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        "error: invalid config for `source` (mqtt-subscribe)\n --> <relay>:1:25\n  |\n\
         1 | mqtt://127.0.0.1:1883/a?qos=7 -\n  |                         ^^^^^ `qos = 7`: QoS is 0, 1 or 2\n\n\
         error: could not load `<relay>`: 1 error\n"
    );
}

#[test]
fn launch_takes_set_for_an_element_by_its_name() {
    let dir = tempdir();
    let o =
        run_in(dir.path(), &["launch", "counter interval=1ms max_count=2 ! console", "--set", "counter.max_count=3"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 3, "{}", stdout(&o));
    let o = run_in(dir.path(), &["launch", "counter ! console", "--set", "countr.max_count=3"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        "error: `--set countr.max_count=3`: no component `countr` in the flow\n  --> <launch>\n  \
         = help: did you mean `counter`?\n\nerror: could not load `<launch>`: 1 error\n"
    );
}
