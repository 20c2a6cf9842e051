//! The `wfrun` command: arguments → library → rendered report → exit code.

mod cli;
mod commands;
#[cfg(feature = "lsp")]
mod lsp;

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    // `wfrun pipeline.wf` runs the workflow.
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv
        .get(1)
        .is_some_and(|a| a.to_string_lossy().ends_with(".wf"))
    {
        argv.insert(1, "run".into());
    }
    let args = cli::Args::parse_from(argv);
    let code = commands::run(args);
    std::process::ExitCode::from(code)
}
