// glibc's allocator spent about a fifth of a replica's CPU in malloc/free/consolidate under load
// (many short-lived JSON values and redb pages); mimalloc keeps per-thread free lists.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    no_transparent_huge_pages();
    nexus_cli::main()
}

/// Opts this process (and its children) out of transparent huge pages. mimalloc asks for them
/// on its arenas; under a replica's allocation pattern every first touch of a 2 MiB page then
/// zeroed it whole, and `clear_page` took an eighth of the machine's CPU at 64 clients. Failing
/// (an old kernel) changes nothing but speed.
fn no_transparent_huge_pages() {
    // SAFETY: prctl with PR_SET_THP_DISABLE reads only its integer arguments.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}
