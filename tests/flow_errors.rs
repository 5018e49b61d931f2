//! `fbp check` on malformed flow files: each error with its exact message,
//! position and suggestion, all errors of a file reported, exit code 2, no panic.
//!
//! Fixtures live in `tests/fixtures/bad/`; `fbp check` runs in that folder so
//! positions read `NAME:LINE:COL`. Keep the fixtures byte-exact: the positions
//! below are asserted against them. Files that are awkward to commit (binary,
//! empty, 10 MB, missing) are made in a temp dir at test time.

use std::path::PathBuf;
use std::process::Output;

use crate::util::{fbp, root, stderr, stdout, tempdir, write};

/// One rendered diagnostic: `error: MESSAGE`, `--> AT`, `= help: HELP`.
#[derive(Debug, PartialEq)]
struct Diag {
    message: String,
    at: String,
    help: Option<String>,
}

fn diag(message: &str, at: &str, help: Option<&str>) -> Diag {
    Diag { message: message.into(), at: at.into(), help: help.map(Into::into) }
}

fn fixtures() -> PathBuf {
    root().join("tests/fixtures/bad")
}

/// Variables the fixtures use; unset unless a test sets them.
const FIXTURE_VARS: &[&str] = &[
    "NOPE",
    "FBP_TEST_INTERVAL",
    "SECRET_WIRE",
    "SECRET_TARGET",
    "SECRET_DUR",
    "SECRET_COUNT",
    "SECRET_EXPR",
    "SECRET_TYPE",
];

/// Runs `fbp check NAME` in the fixtures folder with `vars` set.
fn check(name: &str, vars: &[(&str, &str)]) -> Output {
    let mut cmd = fbp();
    cmd.current_dir(fixtures()).args(["check", name]);
    for var in FIXTURE_VARS {
        cmd.env_remove(var);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("fbp runs")
}

/// Splits `fbp check`'s stderr into its diagnostics and the closing line.
fn parse(text: &str) -> (Vec<Diag>, String) {
    let mut diags: Vec<Diag> = Vec::new();
    let mut closing = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(message) = line.strip_prefix("error: ") {
            if message.starts_with("could not load ") {
                closing = line.to_string();
            } else {
                diags.push(diag(message, "", None));
            }
        } else if let Some(last) = diags.last_mut() {
            if let Some(at) = trimmed.strip_prefix("--> ") {
                last.at = at.to_string();
            } else if let Some(help) = trimmed.strip_prefix("= help: ") {
                last.help = Some(help.to_string());
            }
        }
    }
    (diags, closing)
}

/// Asserts `fbp check` rejected `path`: exit 2, nothing on stdout, no panic,
/// exactly the diagnostics `expected` in that order, then the closing count.
/// Returns stderr.
fn assert_rejected(out: &Output, path: &str, expected: &[Diag]) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{err}");
    assert_eq!(stdout(out), "", "stderr:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    let (diags, closing) = parse(&err);
    assert_eq!(diags, expected, "stderr:\n{err}");
    let n = expected.len();
    let plural = if n == 1 { "" } else { "s" };
    assert_eq!(closing, format!("error: could not load `{path}`: {n} error{plural}"));
    err
}

/// Checks fixture `name` and asserts it fails with exactly `expected`.
fn assert_fixture(name: &str, expected: &[Diag]) -> String {
    assert_rejected(&check(name, &[]), name, expected)
}

#[test]
fn toml_syntax_error_points_at_the_bad_value() {
    assert_fixture(
        "toml-syntax.toml",
        &[diag("invalid TOML: string values must be quoted, expected literal string", "toml-syntax.toml:7:23", None)],
    );
}

#[test]
fn missing_flow_table() {
    assert_fixture(
        "missing-flow.toml",
        &[diag(
            "missing `[flow]` table",
            "missing-flow.toml:1:1",
            Some("start the file with `[flow]`, a `name` and `connections = [...]`"),
        )],
    );
}

#[test]
fn unknown_top_level_table_suggests_components() {
    assert_fixture(
        "unknown-top-level-table.toml",
        &[diag(
            "unknown top-level table `component`",
            "unknown-top-level-table.toml:4:2",
            Some("did you mean `components`?"),
        )],
    );
}

#[test]
fn unknown_flow_key_suggests_description() {
    assert_fixture(
        "unknown-flow-key.toml",
        &[diag("unknown `[flow]` key `descripton`", "unknown-flow-key.toml:3:1", Some("did you mean `description`?"))],
    );
}

#[test]
fn unknown_component_type_suggests_nearest_without_follow_on_errors() {
    // The connection naming `sensors` is not reported again: its component is the error.
    assert_fixture(
        "unknown-component-type.toml",
        &[diag(
            "unknown component type `sensor-sm`",
            "unknown-component-type.toml:6:8",
            Some("did you mean `sensor-sim`?"),
        )],
    );
}

#[test]
fn component_without_type_without_follow_on_errors() {
    assert_fixture(
        "component-without-type.toml",
        &[diag(
            "component `ticks` has no `type`",
            "component-without-type.toml:5:13",
            Some("add `type = \"...\"`; `fbp components` lists the types"),
        )],
    );
}

#[test]
fn unknown_component_key_suggests_config() {
    assert_fixture(
        "unknown-component-key.toml",
        &[diag("unknown component key `confg`", "unknown-component-key.toml:6:1", Some("did you mean `config`?"))],
    );
}

#[test]
fn unknown_config_key_suggests_interval() {
    let err = assert_fixture(
        "unknown-config-key.toml",
        &[diag("unknown config key `intervall`", "unknown-config-key.toml:6:25", Some("did you mean `interval`?"))],
    );
    // rustc style: the offending line and a caret under the key.
    assert!(err.contains("6 | config = { sensors = 4, intervall = \"200ms\" }"), "{err}");
    assert!(err.contains("^^^^^^^^^ not a key of `sensor-sim`"), "{err}");
}

#[test]
fn config_value_of_the_wrong_type() {
    assert_fixture(
        "config-wrong-type.toml",
        &[diag("`sensors` must be an integer, found a string", "config-wrong-type.toml:6:22", None)],
    );
}

#[test]
fn invalid_duration() {
    assert_fixture(
        "invalid-duration.toml",
        &[diag(
            "`interval` is not a duration: `fast`",
            "invalid-duration.toml:6:23",
            Some("write durations like \"200ms\", \"10s\", \"1m\" or \"1h\""),
        )],
    );
}

#[test]
fn invalid_enum_values_suggest_the_nearest() {
    assert_fixture(
        "invalid-enum.toml",
        &[
            diag(
                "`on_component_failure` must be \"stop\" or \"isolate\", found `isolat`",
                "invalid-enum.toml:3:24",
                Some("did you mean `isolate`?"),
            ),
            diag(
                "`when_full` must be one of block, drop_newest, drop_oldest, found `drop_newset`",
                "invalid-enum.toml:5:69",
                Some("did you mean `drop_newest`?"),
            ),
            diag(
                "restart policy must be \"always\", \"on-failure\" or \"never\", found `on-failur`",
                "invalid-enum.toml:11:22",
                Some("did you mean `on-failure`?"),
            ),
            diag(
                "`format` must be one of \"simple\" | \"json\" | \"pretty\", found `jsn`",
                "invalid-enum.toml:19:21",
                Some("did you mean `json`?"),
            ),
        ],
    );
}

#[test]
fn invalid_jq_expression() {
    let err =
        assert_fixture("invalid-jq.toml", &[diag("`expr` is not a valid jq program", "invalid-jq.toml:10:19", None)]);
    assert!(err.contains("^^^^^^^^^^ invalid jq program: "), "{err}");
}

#[test]
fn missing_required_config_key() {
    let out = check("missing-required-key.toml", &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let (diags, closing) = parse(&err);
    assert_eq!(diags.len(), 1, "{err}");
    assert_eq!(diags[0].message, "component `celsius` needs config key `expr`");
    assert_eq!(diags[0].at, "missing-required-key.toml:9:8");
    // The help goes on with the key's documentation, which belongs to the component.
    let help = diags[0].help.as_deref().unwrap_or_default();
    assert!(help.starts_with("add `expr = ...` to its config: "), "{err}");
    assert_eq!(closing, "error: could not load `missing-required-key.toml`: 1 error");
}

#[test]
fn connection_without_arrow() {
    assert_fixture(
        "connection-without-arrow.toml",
        &[diag(
            "a connection must look like `A.port -> B.port`, found `sensors.out => hot.in`",
            "connection-without-arrow.toml:3:16",
            Some("`\"a -> b\"` connects the default ports `out` and `in`"),
        )],
    );
}

#[test]
fn unknown_component_in_connection_suggests_nearest() {
    assert_fixture(
        "unknown-component-in-connection.toml",
        &[diag(
            "unknown component `sensor` in a connection",
            "unknown-component-in-connection.toml:3:17",
            Some("did you mean `sensors`?"),
        )],
    );
}

#[test]
fn unknown_port_suggests_nearest_even_when_short() {
    assert_fixture(
        "unknown-port.toml",
        &[diag("`sensors` (sensor-sim) has no out-port `ot`", "unknown-port.toml:3:25", Some("did you mean `out`?"))],
    );
}

#[test]
fn in_port_used_as_a_source() {
    assert_fixture(
        "in-port-as-source.toml",
        &[diag(
            "`hot` (filter) has no out-port `in`",
            "in-port-as-source.toml:5:8",
            Some("`in` is an in-port of `hot`; connections go from an out-port to an in-port"),
        )],
    );
}

#[test]
fn connection_positions_in_every_string_form() {
    // Multi-line and literal strings place the caret inside the quotes; a string
    // with escapes cannot be mapped character by character, so the whole string.
    assert_fixture(
        "connection-string-forms.toml",
        &[
            diag(
                "unknown component `sensor` in a connection",
                "connection-string-forms.toml:4:6",
                Some("did you mean `sensors`?"),
            ),
            diag(
                "unknown component `hott` in a connection",
                "connection-string-forms.toml:5:15",
                Some("did you mean `hot`?"),
            ),
            diag(
                "`sensors` (sensor-sim) has no out-port `ot`",
                "connection-string-forms.toml:6:21",
                Some("did you mean `out`?"),
            ),
            diag("`hot` (filter) has no in-port `inn`", "connection-string-forms.toml:7:3", Some("did you mean `in`?")),
        ],
    );
}

#[test]
fn missing_env_var_points_at_it_while_defaults_work() {
    // `${FBP_TEST_INTERVAL:-200ms}` is unset too, but has a default: no error.
    let err = assert_fixture(
        "missing-env-var.toml",
        &[diag(
            "environment variable `NOPE` is not set",
            "missing-env-var.toml:7:66",
            Some("set `NOPE`, or give a default: `${NOPE:-VALUE}`"),
        )],
    );
    assert!(err.contains("^^^^^^^ used here"), "{err}");

    let out = check("missing-env-var.toml", &[("NOPE", "x")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "missing-env-var.toml: ok (2 components, 1 connection)\n");
}

#[test]
fn several_errors_are_all_reported_in_file_order() {
    // Not reported: `sensors`' config (its type is unknown) and the two
    // connections naming `sensors` (follow-ons of that one error).
    assert_fixture(
        "several-errors.toml",
        &[
            diag("unknown `[flow]` key `descripton`", "several-errors.toml:3:1", Some("did you mean `description`?")),
            diag(
                "unknown component `alert` in a connection",
                "several-errors.toml:6:15",
                Some("add a `[components.alert]` table, or use one of: celsius, hot"),
            ),
            diag("unknown component type `sensor-sm`", "several-errors.toml:11:8", Some("did you mean `sensor-sim`?")),
            diag("`expr` is not a valid jq program", "several-errors.toml:16:19", None),
            diag(
                "unknown config key `workers`",
                "several-errors.toml:20:42",
                Some("`workers` sits beside `type`, not under `config`"),
            ),
        ],
    );
}

#[test]
fn values_from_env_never_appear_in_errors() {
    let vars = [
        ("SECRET_WIRE", "hunter1"),
        ("SECRET_TARGET", "hunter2.in"),
        ("SECRET_DUR", "hunter2"),
        ("SECRET_COUNT", "hunter3"),
        ("SECRET_EXPR", ".hunter4 | hunter5"),
        ("SECRET_TYPE", "hunter6"),
    ];
    let out = check("secret-from-env.toml", &vars);
    let err = assert_rejected(
        &out,
        "secret-from-env.toml",
        &[
            diag(
                "a connection must look like `A.port -> B.port`, found the value from the environment",
                "secret-from-env.toml:3:16",
                Some("`\"a -> b\"` connects the default ports `out` and `in`"),
            ),
            diag("a connection names an unknown component (from the environment)", "secret-from-env.toml:3:34", None),
            diag(
                "`interval` is not a duration: the value from the environment",
                "secret-from-env.toml:7:23",
                Some("write durations like \"200ms\", \"10s\", \"1m\" or \"1h\""),
            ),
            diag("`max_count` must be an integer, found a string", "secret-from-env.toml:7:52", None),
            diag("`expr` is not a valid jq program", "secret-from-env.toml:11:19", None),
            diag(
                "unknown component type (from the environment)",
                "secret-from-env.toml:14:8",
                Some("`fbp components` lists the types"),
            ),
        ],
    );
    assert!(!err.contains("hunter"), "a variable's value leaked:\n{err}");
}

#[test]
fn unset_variable_is_one_error_not_a_cascade() {
    // Without the variables, each `${...}` is one error; the empty values they
    // leave are not reported again as bad durations, integers or connections.
    let f = "secret-from-env.toml";
    let unset = |var: &str, at: &str| {
        diag(
            &format!("environment variable `{var}` is not set"),
            &format!("{f}:{at}"),
            Some(format!("set `{var}`, or give a default: `${{{var}:-VALUE}}`").as_str()),
        )
    };
    assert_fixture(
        f,
        &[
            unset("SECRET_WIRE", "3:17"),
            unset("SECRET_TARGET", "3:44"),
            unset("SECRET_DUR", "7:24"),
            unset("SECRET_COUNT", "7:53"),
            unset("SECRET_EXPR", "11:20"),
            unset("SECRET_TYPE", "14:9"),
        ],
    );
}

#[test]
fn binary_file_is_not_utf8() {
    let dir = tempdir();
    let mut bytes = b"[flow]\nname = \"x".to_vec();
    bytes.extend_from_slice(&[0xff, 0x00, 0xfe, 0x00, 0xc3, 0x28, 0x80, 0x00, 0x01]);
    std::fs::write(dir.path().join("blob.toml"), &bytes).unwrap();
    let out = fbp().current_dir(dir.path()).args(["check", "blob.toml"]).output().unwrap();
    let err = assert_rejected(
        &out,
        "blob.toml",
        &[diag(
            "the flow file is not UTF-8 text",
            "blob.toml:2:10",
            Some("a flow file is TOML text; is this a binary file?"),
        )],
    );
    assert!(err.contains("^ invalid UTF-8 here"), "{err}");

    // Binary from the first byte: there is no line to show, only the file.
    let png = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0xff, 0xd8];
    std::fs::write(dir.path().join("image.toml"), png).unwrap();
    let out = fbp().current_dir(dir.path()).args(["check", "image.toml"]).output().unwrap();
    assert_rejected(
        &out,
        "image.toml",
        &[diag(
            "the flow file is not UTF-8 text",
            "image.toml",
            Some("a flow file is TOML text; is this a binary file?"),
        )],
    );
}

#[test]
fn empty_file() {
    let dir = tempdir();
    write(dir.path(), "empty.toml", "");
    write(dir.path(), "blank.toml", "  \n\n\t\n");
    for name in ["empty.toml", "blank.toml"] {
        let out = fbp().current_dir(dir.path()).args(["check", name]).output().unwrap();
        assert_rejected(
            &out,
            name,
            &[diag(
                "the flow file is empty",
                name,
                Some("a flow starts with `[flow]` and a `name`, then `[components.NAME]` tables"),
            )],
        );
    }
}

#[test]
fn ten_megabyte_file_is_too_large() {
    let dir = tempdir();
    let big = format!("[flow]\nname = \"big\"\n{}", "# padding\n".repeat(1024 * 1024));
    write(dir.path(), "big.toml", &big);
    let out = fbp().current_dir(dir.path()).args(["check", "big.toml"]).output().unwrap();
    assert_rejected(
        &out,
        "big.toml",
        &[diag(
            &format!("`big.toml` is too large for a flow file ({} bytes; the limit is 4194304)", big.len()),
            "big.toml",
            Some("a flow file names components and connections; data belongs in files the flow reads"),
        )],
    );
}

#[test]
fn missing_file_is_a_clear_error() {
    let dir = tempdir();
    let out = fbp().current_dir(dir.path()).args(["check", "nope.toml"]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let (diags, closing) = parse(&err);
    assert_eq!(diags.len(), 1, "{err}");
    assert!(diags[0].message.starts_with("cannot read `nope.toml`: "), "{err}");
    assert!(diags[0].message.contains("No such file"), "{err}");
    assert_eq!(diags[0].at, "nope.toml");
    assert_eq!(diags[0].help.as_deref(), Some("check the path"));
    assert_eq!(closing, "error: could not load `nope.toml`: 1 error");
}

#[test]
fn folder_is_not_a_flow_file() {
    let dir = tempdir();
    std::fs::create_dir(dir.path().join("flows")).unwrap();
    let out = fbp().current_dir(dir.path()).args(["check", "flows"]).output().unwrap();
    assert_rejected(
        &out,
        "flows",
        &[diag("`flows` is a folder, not a flow file", "flows", Some("give the path of a .toml flow file"))],
    );
}

#[test]
fn every_bad_fixture_is_rejected() {
    // Guards against a fixture that silently starts to pass (or to panic).
    let mut names: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort();
    assert!(names.len() >= 20, "{names:?}");
    for name in names {
        let out = check(&name, &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{name}:\n{err}");
        assert!(!err.contains("panicked"), "{name}:\n{err}");
        let (diags, closing) = parse(&err);
        assert!(!diags.is_empty(), "{name}:\n{err}");
        assert!(diags.iter().all(|d| d.at.starts_with(&name)), "{name}:\n{err}");
        assert!(closing.starts_with(&format!("error: could not load `{name}`: ")), "{name}:\n{err}");
    }
}

#[test]
fn check_reports_every_file_given() {
    // Several files at once: each one's errors, each one's closing line, exit 2.
    let out =
        fbp().current_dir(fixtures()).args(["check", "unknown-port.toml", "invalid-duration.toml"]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("error: could not load `unknown-port.toml`: 1 error"), "{err}");
    assert!(err.contains("error: could not load `invalid-duration.toml`: 1 error"), "{err}");
}

#[test]
fn limits_out_of_range_or_misspelt() {
    let dir = tempdir();
    write(
        dir.path(),
        "limits.toml",
        "[flow]\nname = \"l\"\nconnections = [\"a -> b\"]\n\
         [flow.limits]\nmax_depth = 100000\njq_timeout = \"soon\"\njq_max_step = 5\n\
         [components.a]\ntype = \"counter\"\n[components.b]\ntype = \"null\"\n",
    );
    let out = fbp().current_dir(dir.path()).args(["check", "limits.toml"]).output().unwrap();
    assert_rejected(
        &out,
        "limits.toml",
        &[
            diag(
                "`max_depth` must be from 1 to 1024 levels, found `100000`",
                "limits.toml:5:13",
                Some("the default, 128, fits any sensor reading or API answer"),
            ),
            diag(
                "`jq_timeout` must be a duration like \"1s\", found `soon`",
                "limits.toml:6:14",
                Some("durations are a number and a unit: 500ms, 1s, 2m"),
            ),
            diag("unknown `[flow.limits]` key `jq_max_step`", "limits.toml:7:1", Some("did you mean `jq_max_steps`?")),
        ],
    );
}

#[test]
fn check_warns_when_a_qos1_source_feeds_a_component_holding_its_acknowledgements() {
    let dir = tempdir();
    let flow = r#"[flow]
name = "held"
connections = ["sub -> keep", "keep -> avg", "sub -> group", "quiet -> late", "avg -> out", "group -> out", "late -> out"]

[components.sub]
type = "mqtt-subscribe"
config = { topics = ["sensors/#"], qos = 1 }

[components.keep]
type = "filter"
config = { expr = ".value != null" }

[components.avg]
type = "window"
config = { every = "10s", ack = "on_emit" }

[components.group]
type = "batch"
config = { timeout = "200ms" }

[components.quiet]
type = "mqtt-subscribe"
config = { topics = ["other/#"], qos = 0, client_id = "q" }

[components.late]
type = "window"
config = { every = "1m", ack = "on_emit" }

[components.out]
type = "console"
"#;
    write(dir.path(), "held.toml", flow);
    let o = fbp().current_dir(dir.path()).args(["check", "held.toml"]).output().unwrap();
    assert!(o.status.success(), "a warning does not fail the check:\n{}", stderr(&o));
    assert!(stdout(&o).contains("held.toml: ok (7 components, 7 connections)"), "{}", stdout(&o));
    let err = stderr(&o);
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning: `")).collect();
    assert_eq!(
        warnings,
        [
            "warning: `avg` holds the acknowledgements of `sub` (mqtt-subscribe) longer than its broker lets them wait",
            "warning: `held.toml`: 1 warning"
        ],
        "{err}"
    );
    assert!(err.contains("--> held.toml:13:13"), "at `[components.avg]`:\n{err}");
    assert!(err.contains("`avg` (window) holds `sub`'s acknowledgements up to 10s"), "{err}");
    assert!(err.contains(r#"= help: in `avg`, set `ack = "on_fold"`"#), "{err}");
}

#[test]
fn check_is_quiet_about_a_window_that_acknowledges_on_fold() {
    let dir = tempdir();
    let flow = r#"[flow]
name = "folded"
connections = ["sub -> avg", "avg -> out"]

[components.sub]
type = "mqtt-subscribe"
config = { topics = ["sensors/#"], qos = 1 }

[components.avg]
type = "window"
config = { every = "10s" }

[components.out]
type = "console"
"#;
    write(dir.path(), "folded.toml", flow);
    let o = fbp().current_dir(dir.path()).args(["check", "folded.toml"]).output().unwrap();
    assert!(o.status.success());
    assert_eq!(stderr(&o), "", "no warning");
}

#[test]
fn check_shows_the_line_with_its_secrets_blanked_and_the_caret_in_place() {
    let dir = tempdir();
    write(
        dir.path(),
        "secret.toml",
        "[flow]\nname = \"s\"\nconnections = [\"a -> b\"]\n\
         [components.a]\ntype = \"nats-subscribe\"\n\
         config = { url = \"nats://bob:hunter2@127.0.0.1:4222\", password = \"s3cret\", subject = \"x\", bogus = 1 }\n\
         [components.b]\ntype = \"null\"\n",
    );
    let out = fbp().current_dir(dir.path()).args(["check", "secret.toml"]).output().unwrap();
    let err = stderr(&out);
    assert!(!err.contains("hunter2") && !err.contains("s3cret"), "{err}");
    assert!(err.contains("nats://bob:*******@127.0.0.1:4222") && err.contains("password = \"******\""), "{err}");
    assert!(err.contains("secret.toml:6:"), "{err}");
    let line = err.lines().find(|l| l.contains("bogus = 1")).unwrap();
    let caret = err.lines().find(|l| l.trim_start().starts_with("| ") && l.contains('^')).unwrap();
    assert_eq!(line.find("bogus"), caret.find('^'), "{err}");
}

#[test]
fn a_missing_bracket_is_one_error_not_a_cascade() {
    let err = assert_fixture(
        "missing-bracket.toml",
        &[diag(
            "invalid TOML: missing comma between array elements, expected `,`",
            "missing-bracket.toml:5:1",
            Some("an array ends with `]`: is one missing before this?"),
        )],
    );
    assert_eq!(
        err,
        "error: invalid TOML: missing comma between array elements, expected `,`\n \
         --> missing-bracket.toml:5:1\n  |\n5 | [components.ticks]\n  | ^\n  |\n  \
         = help: an array ends with `]`: is one missing before this?\n\n\
         error: could not load `missing-bracket.toml`: 1 error\n"
    );
}

#[test]
fn a_component_defined_twice_shows_where_it_was_first() {
    let err = assert_fixture(
        "duplicate-component.toml",
        &[diag(
            "component `ticks` is defined twice",
            "duplicate-component.toml:11:13",
            Some("remove one of the two `ticks`, or rename one"),
        )],
    );
    assert_eq!(
        err,
        "error: component `ticks` is defined twice\n  --> duplicate-component.toml:11:13\n   |\n \
         5 | [components.ticks]\n   |             ----- first defined here\n...\n\
         11 | [components.ticks]\n   |             ^^^^^ defined again here\n   |\n   \
         = help: remove one of the two `ticks`, or rename one\n\n\
         error: could not load `duplicate-component.toml`: 1 error\n"
    );
}

#[test]
fn a_key_defined_twice_shows_where_it_was_first() {
    let dir = tempdir();
    write(dir.path(), "key.toml", "[flow]\nname = \"a\"\nname = \"b\"\n");
    let out = fbp().current_dir(dir.path()).args(["check", "key.toml"]).output().unwrap();
    assert_eq!(
        stderr(&out),
        "error: `name` is defined twice\n --> key.toml:3:1\n  |\n2 | name = \"a\"\n  | ---- first defined here\n\
         3 | name = \"b\"\n  | ^^^^ defined again here\n  |\n  = help: remove one of the two `name`, or rename one\n\n\
         error: could not load `key.toml`: 1 error\n"
    );
}

#[test]
fn every_components_build_errors_come_together_at_the_key_they_name() {
    let err = assert_fixture(
        "build-errors.toml",
        &[
            diag("invalid config for `sub` (mqtt-subscribe)", "build-errors.toml:7:67", None),
            diag("invalid config for `sim` (sensor-sim)", "build-errors.toml:11:20", None),
        ],
    );
    assert!(err.contains("^ `qos = 3`: QoS is 0, 1 or 2"), "{err}");
    assert!(err.contains("^^^^^^^^ `range` must be `[low, high]` with low <= high, not `[40, 10]`"), "{err}");
}

/// A flow with every kind of graph warning.
const WARNED: &str = "[flow]\nname = \"w\"\nconnections = [\"a -> b\", \"a -> b\", \"m -> n\", \"n -> m\"]\n\
    [components.a]\ntype = \"counter\"\n[components.b]\ntype = \"console\"\n\
    [components.m]\ntype = \"map\"\nconfig = { expr = \".\" }\n[components.n]\ntype = \"map\"\nconfig = { expr = \".\" }\n\
    [components.lone]\ntype = \"console\"\n";

#[test]
fn check_warns_about_the_graph_and_still_passes() {
    let dir = tempdir();
    write(dir.path(), "w.toml", WARNED);
    let out = fbp().current_dir(dir.path()).args(["check", "w.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "w.toml: ok (5 components, 4 connections)\n");
    assert_eq!(
        stderr(&out),
        "warning: this connection is written twice\n --> w.toml:3:26\n  |\n\
         3 | connections = [\"a -> b\", \"a -> b\", \"m -> n\", \"n -> m\"]\n  \
         |                --------  ^^^^^^^^ written again here\n  |                |\n  \
         |                first written here\n  |\n  \
         = help: each copy delivers every message once more; remove one\n\n\
         warning: `m`, `n` form a cycle that no source feeds\n --> w.toml:8:13\n  |\n\
         8 | [components.m]\n  |             ^ nothing enters this cycle\n  |\n  \
         = help: connect a source into the cycle, or break it\n\n\
         warning: `lone` is not connected to anything\n  --> w.toml:14:13\n   |\n\
         14 | [components.lone]\n   |             ^^^^ no connection goes to or from it\n   |\n   \
         = help: connect it in `connections = [...]`, or remove `[components.lone]`\n\n\
         warning: `w.toml`: 3 warnings\n"
    );
}

#[test]
fn a_flow_without_a_source_is_warned_about() {
    let dir = tempdir();
    write(
        dir.path(),
        "nosource.toml",
        "[flow]\nname = \"n\"\nconnections = [\"m -> b\"]\n[components.m]\ntype = \"map\"\nconfig = { expr = \".\" }\n\
         [components.b]\ntype = \"console\"\n",
    );
    let out = fbp().current_dir(dir.path()).args(["check", "nosource.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(err.starts_with("warning: the flow has no source: no message will ever enter it\n"), "{err}");
    assert!(err.ends_with("warning: `nosource.toml`: 1 warning\n"), "{err}");
}

#[test]
fn a_fed_cycle_that_can_only_wait_is_warned_about_until_one_connection_may_drop() {
    let dir = tempdir();
    let flow = |conn: &str| {
        format!(
            "[flow]\nname = \"loop\"\nconnections = [\"ticks -> a\", \"a -> b\", {conn}]\n\
             [components.ticks]\ntype = \"counter\"\n\
             [components.a]\ntype = \"map\"\nconfig = {{ expr = \".\" }}\n\
             [components.b]\ntype = \"map\"\nconfig = {{ expr = \".\" }}\n"
        )
    };
    write(dir.path(), "loop.toml", &flow("\"b -> a\""));
    let out = fbp().current_dir(dir.path()).args(["check", "loop.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stderr(&out),
        "warning: `a`, `b` form a cycle whose connections all wait when full\n --> loop.toml:6:13\n  |\n\
         6 | [components.a]\n  |             ^ this cycle can fill up and stop\n  |\n  \
         = help: give one connection of the cycle `when_full = \"drop_oldest\"` (or `drop_newest`)\n\n\
         warning: `loop.toml`: 1 warning\n"
    );
    write(dir.path(), "loop.toml", &flow("{ from = \"b\", to = \"a\", when_full = \"drop_oldest\" }"));
    let out = fbp().current_dir(dir.path()).args(["check", "loop.toml"]).output().unwrap();
    assert_eq!((out.status.code(), stderr(&out)), (Some(0), String::new()));
}
