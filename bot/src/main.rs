//! The `drbot` binary: see `drbot --help`.
fn main() -> std::process::ExitCode {
    drbot::cli::main()
}
