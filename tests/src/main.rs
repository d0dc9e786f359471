//! The `nexus` binary built inside the integration-test crate, so end-to-end tests can spawn real
//! processes through `CARGO_BIN_EXE_nexus-e2e` from the same build.

fn main() -> std::process::ExitCode {
    nexus_cli::main()
}
