//! Fuzz target: arbitrary bytes as one or two manifest files through parse + validate + canonical
//! form + diff. Nothing may panic, and every diagnostic must point inside its file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nexus_schemas::{SourceFile, canonical_json, diff, validate_sources};

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let mut files = vec![SourceFile::from_bytes("a.yaml", data[..split].to_vec())];
    if split < data.len() {
        files.push(SourceFile::from_bytes("b.yaml", data[split + 1..].to_vec()));
    }
    let v = validate_sources(&files);
    for d in &v.diagnostics {
        if let Some(span) = d.span {
            let file = files.iter().find(|f| f.name == d.file).expect("diagnostic names a known file");
            assert!(span.offset <= file.text.len(), "span outside the file: {d:?}");
        }
    }
    let objects: Vec<_> = v.objects.iter().map(|o| o.object.clone()).collect();
    for o in &objects {
        let _ = canonical_json(o);
    }
    let cs = diff(&objects, &[]);
    assert_eq!(cs.changes.len(), objects.len());
});
