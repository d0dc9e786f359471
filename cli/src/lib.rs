//! The `nexus` command-line tool: clap commands, config and contexts, output formats and miette
//! reports. `nexus server`, `nexus agent` and `nexus up` wire the library crates together.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

pub mod client;
pub mod cmd;
pub mod config;
pub mod load;
pub mod netprobe;
pub mod render;
pub mod table;

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

/// A multi-threaded tokio runtime for commands that talk to the network.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// Runs a future to completion on a fresh runtime; exit code 2 if the runtime cannot start.
pub fn block_on<F: std::future::Future<Output = u8>>(f: F) -> u8 {
    match runtime() {
        Ok(rt) => rt.block_on(f),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            exit::ERROR
        }
    }
}

/// Runs a fallible future on a fresh runtime.
pub fn block_on_result<T, F: std::future::Future<Output = Result<T, String>>>(
    f: F,
) -> Result<T, String> {
    runtime()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?
        .block_on(f)
}

/// The log filter when neither `NEXUS_LOG` nor `RUST_LOG` is set: `info`, except the Malachite
/// consensus core, which logs every vote it receives at `info` (about fifteen lines per height
/// and replica: hundreds of KiB a second under load, written from the consensus thread).
pub const DEFAULT_LOG_FILTER: &str = "info,arc_malachitebft=warn";

/// Logs to stderr; `NEXUS_LOG` (or `RUST_LOG`) sets the filter, default [`DEFAULT_LOG_FILTER`].
pub fn init_logging() {
    let filter = std::env::var("NEXUS_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| DEFAULT_LOG_FILTER.into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(stderr_is_tty())
        .try_init();
}

/// Resolves when the process gets Ctrl-C or SIGTERM.
pub async fn wait_for_shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
    }
}

/// RFC 3339 (seconds) for a ms timestamp.
pub fn fmt_time(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}
