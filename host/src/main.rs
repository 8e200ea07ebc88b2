//! The `rescue` binary: see `rescue_host::cli`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = rescue_host::cli::Cli::parse();
    match rescue_host::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rescue: {error}");
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            std::process::ExitCode::FAILURE
        }
    }
}
