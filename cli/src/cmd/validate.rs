//! `nexus validate PATH...`: every problem in every manifest, with locations; exit 0 valid
//! (warnings allowed), 1 invalid, 2 usage or IO error.

use std::path::PathBuf;

use clap::ValueEnum;

use crate::exit;
use crate::load::load_sources;
use crate::render::{diagnostics_json, render_diagnostics};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ValidateFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or directories (searched recursively for *.yaml and *.yml); `-` reads stdin.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Output format: human-readable reports, or JSON diagnostics for editors and CI.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ValidateFormat::Text)]
    pub output: ValidateFormat,
}

pub fn run(args: Args) -> u8 {
    let files = match load_sources(&args.paths) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    let v = nexus_schemas::validate_sources(&files);
    let (errors, warnings) = v.counts();
    match args.output {
        ValidateFormat::Json => println!("{}", diagnostics_json(&v, files.len())),
        ValidateFormat::Text => {
            if !v.diagnostics.is_empty() {
                eprint!(
                    "{}",
                    render_diagnostics(&v.diagnostics, &files, crate::stderr_is_tty())
                );
            }
            let nfiles = files.len();
            if errors == 0 {
                let w = if warnings > 0 {
                    format!(" ({warnings} warning{})", plural(warnings))
                } else {
                    String::new()
                };
                println!(
                    "✓ {} object{} in {nfiles} file{} valid{w}",
                    v.objects.len(),
                    plural(v.objects.len()),
                    plural(nfiles)
                );
            } else {
                eprintln!(
                    "✗ {errors} error{} and {warnings} warning{} in {nfiles} file{}",
                    plural(errors),
                    plural(warnings),
                    plural(nfiles)
                );
            }
        }
    }
    if errors == 0 { exit::OK } else { exit::INVALID }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
