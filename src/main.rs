//! The `obby-sync` binary: parse arguments and hand over to [`obby_sync::cli`].

fn main() -> std::process::ExitCode {
    obby_sync::cli::main()
}
