//! `validate_value` (what replicas run on submitted JSON) and `validate_sources` (what the CLI
//! runs on files) are one validator: on every document of the invalid-input corpus and of the
//! examples they find the same problems (code and message), and accept the same documents.

use std::path::{Path, PathBuf};

use nexus_schemas::yaml::parse_documents;
use nexus_schemas::{SourceFile, validate_sources, validate_value};

fn corpus() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in ["cli/tests/fixtures/invalid", "manifests/examples"] {
        let mut stack = vec![root.join(dir)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("corpus dir") {
                let p = e.expect("dir entry").path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "yaml") {
                    files.push(p);
                }
            }
        }
    }
    files.sort();
    files
}

/// (code, message) of every error, sorted.
fn sorted(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
    v.sort();
    v
}

#[test]
fn the_json_validator_agrees_with_the_manifest_validator() {
    let mut documents = 0;
    let mut invalid = 0;
    for path in corpus() {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue; // the non-UTF-8 fixture
        };
        let Ok(docs) = parse_documents(&text) else {
            continue; // syntax errors never reach the object checks
        };
        for doc in docs {
            let json = doc.to_json();
            // The same document as a file of its own: JSON is YAML.
            let alone = SourceFile::from_text("doc.yaml", json.to_string());
            let from_file = validate_sources(&[alone]);
            let file_errors = sorted(
                from_file
                    .diagnostics
                    .iter()
                    .filter(|d| d.is_error())
                    .map(|d| (d.code.to_string(), d.message.clone()))
                    .collect(),
            );
            let value_errors = match validate_value(&json) {
                Ok(obj) => {
                    assert_eq!(
                        from_file.objects.len(),
                        1,
                        "{}: accepted as JSON only",
                        path.display()
                    );
                    assert_eq!(from_file.objects[0].object, obj);
                    Vec::new()
                }
                Err(problems) => {
                    invalid += 1;
                    sorted(
                        problems
                            .iter()
                            .map(|p| (p.code.to_string(), p.message.clone()))
                            .collect(),
                    )
                }
            };
            assert_eq!(value_errors, file_errors, "{}: {json}", path.display());
            documents += 1;
        }
    }
    eprintln!("{documents} documents, {invalid} invalid");
    assert!(documents >= 40, "only {documents} documents checked");
    assert!(invalid >= 25, "only {invalid} invalid documents checked");
}
