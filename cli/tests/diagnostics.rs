//! Snapshot test of every diagnostic in the invalid-input corpus (`tests/fixtures/invalid`): each
//! fixture (a file, or a directory of files) renders exactly as `<fixture>.out`. Regenerate with
//! `UPDATE_EXPECT=1 cargo test -p nexus --test diagnostics`. The pathological inputs (10 MB file,
//! 10,000-deep nesting) are generated here rather than committed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use expect_test::{expect, expect_file};
use nexus_cli::render::{diagnostics_json, render_diagnostics};
use nexus_schemas::{SourceFile, validate_sources};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid")
}

/// Reads a fixture, naming files relative to the fixtures directory so snapshots are stable.
fn load(path: &Path) -> Vec<SourceFile> {
    let base = fixtures_dir();
    let mut paths = Vec::new();
    if path.is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            paths.push(e.unwrap().path());
        }
        paths.sort();
    } else {
        paths.push(path.to_path_buf());
    }
    paths
        .into_iter()
        .map(|p| {
            let name = p.strip_prefix(&base).unwrap().display().to_string();
            SourceFile::from_bytes(name, std::fs::read(&p).unwrap())
        })
        .collect()
}

fn render(files: &[SourceFile]) -> (String, bool) {
    let v = validate_sources(files);
    (
        render_diagnostics(&v.diagnostics, files, false),
        v.has_errors(),
    )
}

#[test]
fn corpus_snapshots() {
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() || p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    fixtures.sort();
    assert!(
        fixtures.len() >= 30,
        "the corpus must hold at least 30 invalid inputs, found {}",
        fixtures.len()
    );
    for fx in &fixtures {
        let files = load(fx);
        let (out, has_errors) = render(&files);
        assert!(!out.is_empty(), "{} produced no diagnostics", fx.display());
        let expected = fx.with_extension("out");
        let expected = if fx.is_dir() {
            PathBuf::from(format!("{}.out", fx.display()))
        } else {
            expected
        };
        expect_file![expected].assert_eq(&out);
        // Every fixture is invalid except the empty-documents one, which only warns.
        let only_warns = fx
            .file_name()
            .unwrap()
            .to_string_lossy()
            .contains("empty-documents");
        assert_eq!(has_errors, !only_warns, "{}", fx.display());
    }
}

#[test]
fn json_diagnostics_carry_locations() {
    let files = load(&fixtures_dir().join("07-unknown-field-typo.yaml"));
    let v = validate_sources(&files);
    let json: serde_json::Value = serde_json::from_str(&diagnostics_json(&v, files.len())).unwrap();
    let d = &json["diagnostics"][0];
    assert_eq!(json["valid"], false);
    assert_eq!(d["code"], "nexus::unknown-field");
    assert_eq!(d["file"], "07-unknown-field-typo.yaml");
    assert_eq!(
        (d["line"].as_u64(), d["column"].as_u64()),
        (Some(7), Some(3))
    );
    assert_eq!(d["help"], "did you mean \"replicas\"?");
}

/// Pathological inputs must fail with a clear message, quickly (the bound here only catches
/// runaway behaviour; `nexus bench validate` measures the real figure).
#[test]
fn pathological_inputs_fail_fast() {
    let guard = Duration::from_secs(10);

    let big = "# padding\n".repeat(1_100_000);
    let t = Instant::now();
    let (out, err) = render(&[SourceFile::from_text("big.yaml", big)]);
    assert!(err && t.elapsed() < guard);
    expect![[r#"
        nexus::file-too-large

          × big.yaml: file is 11000000 bytes; manifest files are limited to 8388608 bytes (8 MiB)
          help: split the manifests into several files in one directory

    "#]]
    .assert_eq(&out);

    let deep = format!(
        "apiVersion: nexus/v1\nkind: Workload\nmetadata: {{name: a}}\nspec:\n  env: {}{}\n",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let t = Instant::now();
    let (out, err) = render(&[SourceFile::from_text("deep.yaml", deep)]);
    assert!(err && t.elapsed() < guard);
    expect![[r#"
        nexus::yaml-syntax

          × deep.yaml:5:263: invalid YAML: nesting is deeper than 64 levels
          help: manifests may nest at most 64 levels deep

    "#]]
    .assert_eq(&out);

    let t = Instant::now();
    let files = load(&fixtures_dir().join("28-billion-laughs.yaml"));
    let (out, err) = render(&files);
    assert!(
        err && t.elapsed() < guard,
        "alias bomb took {:?}",
        t.elapsed()
    );
    // Said in the user's terms, not the parser's (no budget names such as
    // "RecordedAnchorEvents").
    expect![[r#"
        nexus::yaml-syntax

          × 28-billion-laughs.yaml:6:8: invalid YAML: aliases expand to too much data (over 100000 values
          │ copied from anchors)
           ╭─[28-billion-laughs.yaml:6:8]
         5 │ e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
         6 │ f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
           ·        ─┬
           ·         ╰── here
         7 │ g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
           ╰────
          help: the document expands to too many nodes (is it an alias bomb?); write the values out or use
                fewer aliases

    "#]]
    .assert_eq(&out);
}
