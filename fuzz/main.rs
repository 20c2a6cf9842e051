//! A fuzzing driver on stable Rust: mutates a seed corpus for a bounded time
//! and checks, for every input, that nothing panics and the target's
//! properties hold. What fails is minimised and saved under `--crashes`.
//!
//! ```text
//! cargo run --release --example fuzz -- --seconds 3600            # an hour, seed from the clock
//! cargo run --example fuzz -- --seconds 60 --seed 7               # what CI runs (one minute)
//! cargo run --example fuzz -- --replay fuzz/crashes/wf-*.wf        # run saved inputs again
//! ```
//!
//! Options: `--target NAME` (default: all, sharing the time), `--seconds N`,
//! `--seed N`, `--crashes DIR` (default `fuzz/crashes`), `--max-len BYTES`
//! (default 16384), `--slow-ms N` (an input slower than this is reported and
//! saved as `slow-*`, default 2000), `--replay FILE...`.
//!
//! A target is a [`Target`]: seeds, tokens to insert, and `run`, which
//! checks its properties on one input. Adding one is a module and a line in
//! [`targets`]. The input being run is always in `CRASHES/NAME.current`, so a
//! stack overflow or an abort, which no driver can catch, leaves it behind.

mod mutate;
#[cfg(feature = "lsp")]
mod rpc;
mod wf;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mutate::Rng;

/// One input's result.
pub struct Outcome {
    /// A property that failed, in words.
    pub failure: Option<String>,
    /// What the input exercised (diagnostic codes, say): an input with a
    /// signature not seen before joins the corpus.
    pub signature: u64,
}

/// Something to fuzz.
pub trait Target {
    fn name(&self) -> &'static str;
    /// The extension of saved inputs.
    fn extension(&self) -> &'static str {
        "bin"
    }
    /// Inputs to start from.
    fn seeds(&self) -> Vec<Vec<u8>>;
    /// Byte strings the mutator inserts: the format's tokens.
    fn tokens(&self) -> Vec<&'static [u8]>;
    /// Runs one input and checks the properties; panics are the driver's business.
    fn run(&self, input: &[u8]) -> Outcome;
}

/// Every target, by name.
fn targets() -> Vec<Box<dyn Target>> {
    vec![
        Box::new(wf::Wf::new()),
        #[cfg(feature = "lsp")]
        Box::new(rpc::Rpc),
    ]
}

struct Options {
    targets: Vec<String>,
    seconds: f64,
    seed: u64,
    crashes: PathBuf,
    max_len: usize,
    slow: Duration,
    replay: Vec<PathBuf>,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        targets: Vec::new(),
        seconds: 10.0,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
        crashes: Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/crashes"),
        max_len: 16 * 1024,
        slow: Duration::from_millis(2000),
        replay: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        let number = |v: String| v.parse::<f64>().map_err(|e| format!("{arg}: {e}"));
        match arg.as_str() {
            "--target" => o.targets.push(value()?),
            "--seconds" => o.seconds = number(value()?)?,
            "--seed" => o.seed = number(value()?)? as u64,
            "--crashes" => o.crashes = value()?.into(),
            "--max-len" => o.max_len = number(value()?)? as usize,
            "--slow-ms" => o.slow = Duration::from_millis(number(value()?)? as u64),
            "--replay" => {
                o.replay.extend(args.by_ref().map(PathBuf::from));
            }
            "-h" | "--help" => {
                return Err(
                    "usage: fuzz [--target NAME] [--seconds N] [--seed N] [--crashes DIR] \
                            [--max-len BYTES] [--slow-ms N] [--replay FILE...]"
                        .into(),
                )
            }
            other => return Err(format!("unknown argument `{other}` (see --help)")),
        }
    }
    Ok(o)
}

/// The message and place of the last panic, set by the hook (on any thread:
/// the parser's pieces run on scoped threads).
static PANIC: Mutex<Option<String>> = Mutex::new(None);

fn main() -> std::process::ExitCode {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    std::panic::set_hook(Box::new(|info| {
        *PANIC.lock().unwrap_or_else(|e| e.into_inner()) = Some(info.to_string());
    }));
    let all = targets();
    let chosen: Vec<&dyn Target> = all
        .iter()
        .map(|t| t.as_ref())
        .filter(|t| o.targets.is_empty() || o.targets.iter().any(|n| n == t.name()))
        .collect();
    if chosen.is_empty() {
        let names: Vec<_> = all.iter().map(|t| t.name()).collect();
        eprintln!("no such target; there are: {}", names.join(", "));
        return std::process::ExitCode::from(2);
    }
    if let Err(e) = std::fs::create_dir_all(&o.crashes) {
        eprintln!("cannot create {}: {e}", o.crashes.display());
        return std::process::ExitCode::from(2);
    }
    let mut failures = 0;
    for target in &chosen {
        failures += if o.replay.is_empty() {
            let seconds = o.seconds / chosen.len() as f64;
            Campaign::new(*target, &o).run(Duration::from_secs_f64(seconds))
        } else {
            replay(*target, &o)
        };
    }
    if failures > 0 {
        println!(
            "{failures} failing inputs, saved in {}",
            o.crashes.display()
        );
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}

/// Runs `input` once: the failure (a property, or a panic with its place).
fn run_once(target: &dyn Target, input: &[u8]) -> (Option<String>, u64) {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target.run(input))) {
        Ok(outcome) => (outcome.failure, outcome.signature),
        Err(_) => {
            let message = PANIC
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .unwrap_or_else(|| "a panic".into());
            (Some(format!("panic: {message}")), 0)
        }
    }
}

/// The kind of a failure, so one bug is saved once and minimising keeps to
/// it: the start of its first line without digits (a panic's place, a
/// property's words).
fn kind(failure: &str) -> String {
    let first = failure.lines().next().unwrap_or("");
    first
        .chars()
        .take(60)
        .filter(|c| !c.is_ascii_digit())
        .collect()
}

fn replay(target: &dyn Target, o: &Options) -> usize {
    let mut failures = 0;
    for path in &o.replay {
        let Ok(input) = std::fs::read(path) else {
            eprintln!("cannot read {}", path.display());
            failures += 1;
            continue;
        };
        match run_once(target, &input).0 {
            Some(f) => {
                println!("{}: FAILS\n{f}\n", path.display());
                failures += 1;
            }
            None => println!("{}: passes", path.display()),
        }
    }
    failures
}

struct Campaign<'a> {
    target: &'a dyn Target,
    o: &'a Options,
    rng: Rng,
    /// The seeds first, then inputs that showed a new signature.
    corpus: Vec<Vec<u8>>,
    seeds: usize,
    tokens: Vec<&'static [u8]>,
    signatures: HashSet<u64>,
    kinds: HashSet<String>,
    current: PathBuf,
}

/// The corpus stops growing here; new inputs then replace random old ones.
const CORPUS_MAX: usize = 4096;

impl<'a> Campaign<'a> {
    fn new(target: &'a dyn Target, o: &'a Options) -> Campaign<'a> {
        let mut corpus = target.seeds();
        if corpus.is_empty() {
            corpus.push(Vec::new());
        }
        Campaign {
            target,
            o,
            rng: Rng::new(o.seed),
            seeds: corpus.len(),
            corpus,
            tokens: target.tokens(),
            signatures: HashSet::new(),
            kinds: HashSet::new(),
            current: o.crashes.join(format!("{}.current", target.name())),
        }
    }

    /// Fuzzes for `time`; returns the number of distinct failures found.
    fn run(mut self, time: Duration) -> usize {
        let name = self.target.name();
        println!(
            "fuzz {name}: seed {}, {} seeds, {:.0} s",
            self.o.seed,
            self.corpus.len(),
            time.as_secs_f64()
        );
        let started = Instant::now();
        let mut last_report = started;
        let mut runs = 0u64;
        let mut failures = 0;
        // The seeds first, as they are.
        let seeds = self.corpus.clone();
        for seed in &seeds {
            failures += self.try_input(seed.clone());
            runs += 1;
        }
        while started.elapsed() < time {
            // A quarter from the seeds, to stay near real files.
            let from = if self.rng.one_in(4) {
                &self.corpus[..self.seeds]
            } else {
                &self.corpus[..]
            };
            let mut input = self.rng.pick(from).clone();
            mutate::mutate(
                &mut self.rng,
                &mut input,
                &self.corpus,
                &self.tokens,
                self.o.max_len,
            );
            failures += self.try_input(input);
            runs += 1;
            if last_report.elapsed() > Duration::from_secs(10) {
                last_report = Instant::now();
                self.report(runs, started, failures);
            }
        }
        self.report(runs, started, failures);
        let _ = std::fs::remove_file(&self.current);
        failures
    }

    fn report(&self, runs: u64, started: Instant, failures: usize) {
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "fuzz {}: {runs} runs in {seconds:.0} s ({:.0}/s), corpus {}, signatures {}, failures {failures}",
            self.target.name(),
            runs as f64 / seconds.max(1e-9),
            self.corpus.len(),
            self.signatures.len(),
        );
    }

    /// Runs one input; 1 when it is a new failure.
    fn try_input(&mut self, input: Vec<u8>) -> usize {
        // Left behind only if the process dies on this input.
        let _ = std::fs::write(&self.current, &input);
        let started = Instant::now();
        let (failure, signature) = run_once(self.target, &input);
        let took = started.elapsed();
        if let Some(failure) = failure {
            return self.failed(input, &failure);
        }
        if took > self.o.slow {
            let kind = format!("slow {}", input.len() / 1024);
            if self.kinds.insert(kind) {
                let path = self.save("slow", &input, &format!("took {took:?}"));
                println!("SLOW ({took:?}, {} bytes): {}", input.len(), path.display());
            }
        }
        if self.signatures.insert(signature) {
            if self.corpus.len() < CORPUS_MAX {
                self.corpus.push(input);
            } else if self.seeds < CORPUS_MAX {
                let at = self.seeds + self.rng.below(CORPUS_MAX - self.seeds);
                self.corpus[at] = input;
            }
        }
        0
    }

    fn failed(&mut self, input: Vec<u8>, failure: &str) -> usize {
        let kind = kind(failure);
        if !self.kinds.insert(kind.clone()) {
            return 0;
        }
        let small = self.minimise(input, &kind);
        let failure = run_once(self.target, &small)
            .0
            .unwrap_or_else(|| failure.to_string());
        let path = self.save("crash", &small, &failure);
        println!(
            "FAILURE ({} bytes, saved as {}):\n{failure}\n",
            small.len(),
            path.display()
        );
        1
    }

    /// A smaller input that fails the same way: drops lines, then ever
    /// smaller runs of bytes, for at most ten seconds.
    fn minimise(&self, mut input: Vec<u8>, kind: &str) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let fails = |candidate: &[u8]| {
            run_once(self.target, candidate)
                .0
                .is_some_and(|f| self::kind(&f) == kind)
        };
        // Lines.
        let mut i = 0;
        while Instant::now() < deadline {
            let lines: Vec<usize> = std::iter::once(0)
                .chain(
                    input
                        .iter()
                        .enumerate()
                        .filter(|(_, &c)| c == b'\n')
                        .map(|(i, _)| i + 1),
                )
                .collect();
            if i >= lines.len() {
                break;
            }
            let end = lines.get(i + 1).copied().unwrap_or(input.len());
            let mut candidate = input.clone();
            candidate.drain(lines[i]..end);
            if candidate.len() < input.len() && fails(&candidate) {
                input = candidate;
            } else {
                i += 1;
            }
        }
        // Bytes, in halving chunks.
        let mut chunk = input.len().next_power_of_two() / 2;
        while chunk > 0 && Instant::now() < deadline {
            let mut at = 0;
            while at < input.len() && Instant::now() < deadline {
                let mut candidate = input.clone();
                candidate.drain(at..(at + chunk).min(input.len()));
                if fails(&candidate) {
                    input = candidate;
                } else {
                    at += chunk;
                }
            }
            chunk /= 2;
        }
        input
    }

    /// Saves an input and what it did as `PREFIX-NAME-HASH.EXT` and `.txt`.
    fn save(&self, prefix: &str, input: &[u8], what: &str) -> PathBuf {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        input.hash(&mut h);
        let stem = format!("{prefix}-{}-{:016x}", self.target.name(), h.finish());
        let path = self
            .o
            .crashes
            .join(format!("{stem}.{}", self.target.extension()));
        let _ = std::fs::write(&path, input);
        let _ = std::fs::write(self.o.crashes.join(format!("{stem}.txt")), what);
        path
    }
}
