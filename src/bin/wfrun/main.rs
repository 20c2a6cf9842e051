//! The `wfrun` command: arguments → library → rendered report → exit code.

// Printing that never panics: a closed standard output (`wfrun check | head`)
// or standard error is not a failure of the command, which goes on and ends
// with its own status. Any other error writing standard output (a full disk
// under `> predictions.csv`) is remembered and fails the command at the end.
// Lines for people: `outln!` escapes control characters (but colours) when
// standard output is a terminal, `errln!` always; `out!` and `err!` write as
// given (the progress line's own cursor codes).
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let line = format!($($t)*);
        if let Err(e) = writeln!(std::io::stdout(), "{}", crate::for_stdout(&line)) {
            crate::stdout_failed(e);
        }
    }};
}
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout(), $($t)*) {
            crate::stdout_failed(e);
        }
    }};
}
macro_rules! errln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let line = wfrun::report::terminal_safe(&format!($($t)*), true);
        let _ = writeln!(std::io::stderr(), "{line}");
    }};
}
macro_rules! err {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($t)*);
    }};
}

mod cli;
mod commands;
#[cfg(feature = "lsp")]
mod lsp;
#[cfg(feature = "train")]
mod progress;
#[cfg(feature = "train")]
mod use_model;

use clap::Parser as _;

/// `text` as standard output should show it: control characters escaped
/// (colours kept) when it is a terminal, which a name read from a file could
/// otherwise drive; as it is for a pipe or a file (CSV and JSON keep names
/// as they are).
pub(crate) fn for_stdout(text: &str) -> std::borrow::Cow<'_, str> {
    use std::io::IsTerminal as _;
    static TERMINAL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *TERMINAL.get_or_init(|| std::io::stdout().is_terminal()) {
        std::borrow::Cow::Owned(wfrun::report::terminal_safe(text, true))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

fn main() -> std::process::ExitCode {
    // wfrun's CPU kernels bring their own threads; candle's element-wise pool
    // would spin beside them on the same cores. Set before candle starts it.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    #[cfg(feature = "train")]
    wfrun::models::cpu::tune_allocator();
    // `wfrun pipeline.wf` (after any global option) runs the workflow.
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(at) = run_at(&argv) {
        argv.insert(at, "run".into());
    }
    let args = match cli::Args::try_parse_from(argv) {
        Ok(args) => args,
        Err(e) => return usage_error(&e),
    };
    let mut code = commands::run(args);
    {
        use std::io::Write as _;
        if let Err(e) = std::io::stdout().flush() {
            stdout_failed(e);
        }
    }
    if let Some(e) = STDOUT_ERROR.get() {
        errln!("error: the output could not be written: {e}");
        code = code.max(commands::TROUBLE);
    }
    std::process::ExitCode::from(code)
}

/// Writes clap's message for arguments it refused (or its help, or the
/// version) and gives its status. clap echoes the argument it refused as it
/// was given and, on a terminal, would pass the control characters in it
/// through (a file name from a glob can hold them): the coloured message is
/// written as reports are, its control characters escaped but its colours
/// kept; elsewhere as plain text. A closed stream is no failure.
fn usage_error(e: &clap::Error) -> std::process::ExitCode {
    use std::io::{IsTerminal as _, Write as _};
    let on_stderr = e.use_stderr();
    let terminal = if on_stderr {
        std::io::stderr().is_terminal()
    } else {
        std::io::stdout().is_terminal()
    };
    let text = usage_text(e, terminal && std::env::var_os("NO_COLOR").is_none());
    let _ = if on_stderr {
        write!(std::io::stderr(), "{text}")
    } else {
        write!(std::io::stdout(), "{text}")
    };
    std::process::ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
}

/// clap's message, coloured or not, with no control characters but colours.
fn usage_text(e: &clap::Error, colours: bool) -> String {
    if colours {
        wfrun::report::terminal_safe(&e.render().ansi().to_string(), true)
    } else {
        wfrun::report::terminal_safe(&e.render().to_string(), false)
    }
}

/// Lets the heap this process grows next be backed by 2 MiB pages, where
/// the system gives them on request (Linux's transparent huge pages in
/// `madvise` mode, the usual default) and the allocator is glibc's: a check
/// of a large file allocates its syntax tree and specs in many small
/// pieces, and the kernel's page faults for them (one per 4 KiB page, each
/// charged and cleared) were a third of a cold `wfrun check`'s time. Only
/// for commands that read large workflow files: a small check would pay for
/// clearing a whole huge page. Nothing happens elsewhere, or where the
/// system refuses.
fn huge_pages_for_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` sets an allocator parameter within its range; the
    // block allocated is freed at once; `madvise` only advises on the pages
    // between two program breaks, which the heap has just mapped.
    unsafe {
        const PAD: usize = 32 << 20;
        const HUGE: usize = 2 << 20;
        // The heap grows by its request plus 32 MiB at a time; grow it now
        // with a block larger than its free top and below the threshold of
        // blocks mapped apart (`tune_allocator`'s), and mark the part of the
        // growth that whole huge pages cover.
        libc::mallopt(libc::M_MMAP_THRESHOLD, PAD as libc::c_int);
        libc::mallopt(libc::M_TOP_PAD, PAD as libc::c_int);
        let before = libc::sbrk(0) as usize;
        // (`black_box`: a block freed unused would be optimised away.)
        libc::free(std::hint::black_box(libc::malloc(HUGE)));
        let after = libc::sbrk(0) as usize;
        let start = before.next_multiple_of(HUGE);
        if before != usize::MAX && after != usize::MAX && after > start {
            libc::madvise(
                start as *mut libc::c_void,
                after - start,
                libc::MADV_HUGEPAGE,
            );
        }
    }
}

/// The first error writing standard output, other than a closed pipe.
static STDOUT_ERROR: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Remembers an error writing standard output: a closed pipe (`| head`) is
/// not one.
fn stdout_failed(e: std::io::Error) {
    if e.kind() != std::io::ErrorKind::BrokenPipe {
        let _ = STDOUT_ERROR.set(e.to_string());
    }
}

/// Where `run` goes when the first argument that is not an option names a
/// `.wf` file: after the global options (`--color WHEN`), before the run's own
/// flags (`wfrun --fresh FILE.wf`).
fn run_at(argv: &[std::ffi::OsString]) -> Option<usize> {
    let mut start = None;
    let mut i = 1;
    while let Some(arg) = argv.get(i) {
        let arg = arg.to_string_lossy();
        if arg == "--color" {
            i += 2;
            continue;
        }
        if arg.starts_with("--color=") {
            i += 1;
            continue;
        }
        start.get_or_insert(i);
        if !arg.starts_with('-') {
            return arg.ends_with(".wf").then_some(start.unwrap_or(i));
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::cli;
    use clap::Parser as _;

    #[test]
    fn a_refused_argument_reaches_no_terminal_raw() {
        // A value that would retitle the terminal and clear its screen.
        let refused = cli::Args::try_parse_from([
            "wfrun",
            "--color",
            "al\u{1b}]0;owned\u{7}ways\u{1b}[2J",
            "check",
            "a.wf",
        ])
        .map(|_| ())
        .unwrap_err();
        for colours in [true, false] {
            let text = super::usage_text(&refused, colours);
            assert!(text.contains("invalid value"), "{text}");
            assert!(!text.contains('\u{7}'), "{text:?}");
            // What escapes are left are clap's colours.
            for (at, _) in text.match_indices('\u{1b}') {
                let rest = &text.as_bytes()[at + 1..];
                let params = rest[1..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit() || **b == b';')
                    .count();
                assert!(rest[0] == b'[' && rest[1 + params] == b'm', "{text:?}");
            }
            assert_eq!(colours, text.contains("\u{1b}["), "{text:?}");
        }
        // Coloured, the value is shown escaped.
        let text = super::usage_text(&refused, true);
        assert!(
            text.contains("al\\u{1b}]0;owned\\u{7}ways\\u{1b}[2J"),
            "{text:?}"
        );
    }
}
