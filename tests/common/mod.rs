//! Running the `wfrun` binary from integration tests.

use std::process::Command;

/// What one run of the binary printed and how it exited.
pub struct Run {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

/// Runs `wfrun ARGS` in the repository root, with a fixed report width, on
/// a machine the same everywhere: 64 GiB of memory, never calibrated (the
/// cost model's fallback figures).
pub fn wfrun(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_wfrun"))
        .args(args)
        .env("COLUMNS", "100")
        .env("WFRUN_MEMORY_GIB", "64")
        .env(
            "WFRUN_CACHE_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-cache-none"),
        )
        .env_remove("NO_COLOR")
        .output()
        .expect("run wfrun");
    Run {
        stdout: String::from_utf8(out.stdout).expect("UTF-8 standard output"),
        stderr: String::from_utf8(out.stderr).expect("UTF-8 standard error"),
        code: out.status.code().unwrap_or(-1),
    }
}
