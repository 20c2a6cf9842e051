//! Running the `wfrun` binary from integration tests.

use std::process::Command;

/// What one run of the binary printed and how it exited.
pub struct Run {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

/// Runs `wfrun ARGS` in the repository root, with a fixed report width.
pub fn wfrun(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_wfrun"))
        .args(args)
        .env("COLUMNS", "100")
        .env_remove("NO_COLOR")
        .output()
        .expect("run wfrun");
    Run {
        stdout: String::from_utf8(out.stdout).expect("UTF-8 standard output"),
        stderr: String::from_utf8(out.stderr).expect("UTF-8 standard error"),
        code: out.status.code().unwrap_or(-1),
    }
}
