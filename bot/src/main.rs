//! The `drbot` binary: see `drbot --help`.

/// mimalloc: less time in malloc and a smaller resident set than glibc's allocator under
/// many short-lived request allocations across threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tunes the allocator before anything allocates (arena options only take effect before
/// mimalloc reserves its first arena, which happens before `main`).
#[used]
#[unsafe(link_section = ".init_array")]
static TUNE_ALLOCATOR: extern "C" fn() = {
    extern "C" fn tune() {
        drbot::alloc::tune();
    }
    tune
};

fn main() -> std::process::ExitCode {
    drbot::cli::main()
}
