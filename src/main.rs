use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = tritium::cli::Cli::parse();
    match tritium::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
