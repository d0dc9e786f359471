//! The offline commands as a user runs them: exit codes, stdin, output formats.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn nexus(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nexus"));
    cmd.args(args)
        .current_dir(repo())
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn nexus");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn validate_exit_codes() {
    let examples = repo().join("manifests/examples");
    let ok = nexus(&["validate", examples.to_str().unwrap()], None);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    assert!(
        text(&ok.stdout).contains("9 objects in 5 files valid"),
        "{}",
        text(&ok.stdout)
    );

    let out = nexus(
        &[
            "validate",
            "cli/tests/fixtures/invalid/07-unknown-field-typo.yaml",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("07-unknown-field-typo.yaml:7:3: unknown field \"replica\"")
            && err.contains("did you mean \"replicas\"?"),
        "{err}"
    );
    assert!(err.contains("✗ 1 error and 0 warnings in 1 file"), "{err}");

    let missing = nexus(&["validate", "/nonexistent/manifests"], None);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("no such file or directory"));

    let usage = nexus(&["validate"], None);
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn validate_reads_stdin_and_prints_json() {
    let doc = "apiVersion: nexus/v1\nkind: Workload\nmetadata: {name: a}\nspec: {command: [x], replicas: -2}\n";
    let out = nexus(&["validate", "-o", "json", "-"], Some(doc));
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["errors"], 1);
    assert_eq!(v["diagnostics"][0]["file"], "<stdin>");
    assert_eq!(v["diagnostics"][0]["code"], "nexus::out-of-range");
    assert_eq!(v["diagnostics"][0]["line"], 4);
}

#[test]
fn diff_exit_codes_and_markdown() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.yaml");
    let new = dir.path().join("new.yaml");
    std::fs::write(&old, "apiVersion: nexus/v1\nkind: Workload\nmetadata: {name: api}\nspec: {command: [api], replicas: 2}\n").unwrap();
    std::fs::write(&new, "apiVersion: nexus/v1\nkind: Workload\nmetadata: {name: api}\nspec: {command: [api], replicas: 3}\n").unwrap();
    let same = nexus(
        &["diff", old.to_str().unwrap(), old.to_str().unwrap()],
        None,
    );
    assert_eq!(same.status.code(), Some(0));
    assert!(text(&same.stdout).contains("No changes"));
    let md = nexus(
        &[
            "diff",
            "-o",
            "markdown",
            old.to_str().unwrap(),
            new.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(md.status.code(), Some(1));
    let out = text(&md.stdout);
    assert!(out.contains("| `spec.replicas` | `2` | `3` |"), "{out}");
    let bad = nexus(&["diff", old.to_str().unwrap(), "/nonexistent.yaml"], None);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn schema_out_writes_every_kind() {
    let dir = tempfile::tempdir().unwrap();
    let out = nexus(&["schema", "--out", dir.path().to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0));
    for name in [
        "all.json",
        "workload.json",
        "service.json",
        "networkpolicy.json",
        "gitsource.json",
    ] {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(name)).unwrap()).unwrap();
        assert_eq!(
            v["$schema"], "http://json-schema.org/draft-07/schema#",
            "{name}"
        );
    }
}

#[test]
fn completion_scripts() {
    for shell in ["bash", "zsh", "fish"] {
        let out = nexus(&["completion", shell], None);
        assert_eq!(out.status.code(), Some(0));
        assert!(text(&out.stdout).contains("validate"), "{shell}");
    }
}
