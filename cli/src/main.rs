// glibc's allocator spent about a fifth of a replica's CPU in malloc/free/consolidate under load
// (many short-lived JSON values and redb pages); mimalloc keeps per-thread free lists.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    nexus_cli::main()
}
