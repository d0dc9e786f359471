//! `nexus schema [--out DIR]`: the JSON Schemas (draft-07) of every kind and a combined schema
//! that dispatches on `kind`, for yaml-language-server and other editors.

use std::path::PathBuf;

use nexus_schemas::Kind;
use nexus_schemas::schema::{combined_schema, kind_schema};

use crate::exit;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write `all.json` and one `<kind>.json` per kind into DIR instead of printing the combined schema.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Print only this kind's schema (Workload, Service, NetworkPolicy, GitSource).
    #[arg(long, value_name = "KIND")]
    pub kind: Option<String>,
}

pub fn run(args: Args) -> u8 {
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default() + "\n";
    if let Some(dir) = args.out {
        if let Err(e) = std::fs::create_dir_all(&dir) {
            eprintln!("error: cannot create {}: {e}", dir.display());
            return exit::ERROR;
        }
        let mut files = vec![("all.json".to_string(), combined_schema())];
        for k in Kind::ALL {
            files.push((
                format!("{}.json", k.as_str().to_ascii_lowercase()),
                kind_schema(k),
            ));
        }
        for (name, schema) in files {
            let path = dir.join(&name);
            if let Err(e) = std::fs::write(&path, pretty(&schema)) {
                eprintln!("error: cannot write {}: {e}", path.display());
                return exit::ERROR;
            }
            println!("wrote {}", path.display());
        }
        return exit::OK;
    }
    match args.kind {
        Some(k) => match Kind::parse(&k) {
            Some(kind) => print!("{}", pretty(&kind_schema(kind))),
            None => {
                eprintln!(
                    "error: unknown kind {k:?}; kinds are Workload, Service, NetworkPolicy, GitSource"
                );
                return exit::ERROR;
            }
        },
        None => print!("{}", pretty(&combined_schema())),
    }
    exit::OK
}
