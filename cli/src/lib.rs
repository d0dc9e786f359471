//! The `nexus` command-line tool: clap commands, config and contexts, output formats and miette
//! reports. `nexus server`, `nexus agent` and `nexus up` wire the library crates together.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

pub mod cmd;
pub mod config;
pub mod load;
pub mod render;

pub use cmd::Cli;

/// Exit codes shared by every command: 0 success / no changes, 1 invalid input or changes found,
/// 2 usage, IO or connection errors.
pub mod exit {
    pub const OK: u8 = 0;
    pub const INVALID: u8 = 1;
    pub const ERROR: u8 = 2;
}

/// Whether stderr is an interactive terminal (colors, progress).
pub fn stderr_is_tty() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Entry point shared by the `nexus` binary and the test binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::ERROR
            } else {
                exit::OK
            });
        }
    };
    ExitCode::from(cmd::run(cli))
}
