//! The `wfrun` command: arguments → library → rendered report → exit code.

mod cli;
mod commands;

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let args = cli::Args::parse();
    let code = commands::run(args);
    std::process::ExitCode::from(code)
}
