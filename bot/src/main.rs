//! The `drbot` binary: see `drbot --help`.

/// mimalloc: less time in malloc and a smaller resident set than glibc's allocator under
/// many short-lived request allocations across threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    drbot::cli::main()
}
