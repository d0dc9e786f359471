//! `nexus diff OLD NEW`: the change set between two manifest sets; exit 0 no changes, 1 changes,
//! 2 error (the kubectl diff convention).

use std::path::PathBuf;

use nexus_schemas::diff::{diff, render_json, render_markdown, render_text};

use super::Format;
use crate::exit;
use crate::load::load_sources;
use crate::render::render_diagnostics;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The current manifests (file or directory).
    pub old: PathBuf,
    /// The proposed manifests (file or directory).
    pub new: PathBuf,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

pub fn run(args: Args) -> u8 {
    let mut sides = Vec::new();
    for path in [&args.old, &args.new] {
        let files = match load_sources(std::slice::from_ref(path)) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::ERROR;
            }
        };
        let v = nexus_schemas::validate_sources(&files);
        if v.has_errors() {
            eprint!(
                "{}",
                render_diagnostics(&v.diagnostics, &files, crate::stderr_is_tty())
            );
            eprintln!(
                "error: {} has invalid manifests; fix them before diffing",
                path.display()
            );
            return exit::ERROR;
        }
        sides.push(nexus_schemas::validate::objects_of(&v));
    }
    let cs = diff(&sides[0], &sides[1]);
    let text = match args.output {
        Format::Text => render_text(&cs),
        Format::Markdown => render_markdown(&cs),
        Format::Json => render_json(&cs) + "\n",
    };
    print!("{text}");
    if cs.is_empty() {
        exit::OK
    } else {
        exit::INVALID
    }
}
