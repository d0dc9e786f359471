fn main() -> std::process::ExitCode {
    nexus_cli::main()
}
