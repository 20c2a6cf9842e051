//! Embedding the checker in another Rust program.
//!
//!     cargo run --example embed_checker -- workflows/quickstart.wf
//!
//! The library returns data; what to print is the embedding program's choice.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let path = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "workflows/quickstart.wf".into()),
    );

    let checked = match wfrun::check_file(&path, &wfrun::CheckOptions::default()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot read {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };

    for d in checked.json() {
        println!(
            "{}:{}:{}: {:?} [{}] {}",
            d.location.file, d.location.line, d.location.column, d.severity, d.code, d.message
        );
    }
    match checked.plan() {
        Some(plan) => {
            println!(
                "{}: {} on {}, lrate {}, {} optimizer steps",
                plan.workflow,
                plan.template,
                plan.device,
                plan.lrate,
                plan.optimizer_steps
                    .map_or("an unknown number of".to_string(), |n| n.to_string())
            );
            ExitCode::SUCCESS
        }
        None => ExitCode::FAILURE,
    }
}
