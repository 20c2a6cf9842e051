//! A run owns its output folder: an exclusive lock file while it runs, no
//! silent start over a previous run's results, and no file of an earlier
//! run's steps left beside this run's.

#[cfg(not(unix))]
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
#[cfg(not(unix))]
use std::sync::Mutex;

use super::{Event, RunError, RunOptions};

/// The lock file, in the output folder.
pub const LOCK: &str = ".wfrun.lock";

/// What a run writes at the top of its folder: `--fresh` removes these and
/// nothing else.
pub const OUTPUTS: [&str; 11] = [
    "plan.json",
    "checkpoint.safetensors",
    "model.safetensors",
    "model.json",
    "metrics.jsonl",
    "embeddings.safetensors",
    "embeddings.csv",
    "unseen.json",
    "report.html",
    "pictures",
    "steps",
];

/// The lock on an output folder; dropping it removes the lock file (and, on
/// Unix, closing the file releases the kernel's lock on it).
#[derive(Debug)]
pub struct Owner {
    lock: PathBuf,
    #[cfg(unix)]
    _file: std::fs::File,
    #[cfg(not(unix))]
    folder: PathBuf,
}

impl Drop for Owner {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.lock);
        #[cfg(not(unix))]
        held(|h| h.remove(&self.folder));
    }
}

/// The id of the process named in a lock file, when it names one.
fn holder(lock: &Path) -> Option<u32> {
    std::fs::read_to_string(lock).ok()?.trim().parse().ok()
}

/// Takes the output folder `out` (created if needed) for this run, or says
/// which process holds it.
///
/// On Unix the lock is the kernel's (`flock` on the lock file), released when
/// the process ends however it ends: a file left by a killed run holds no
/// lock and is taken over, and neither a reused process id nor two runs
/// racing to take over can fool it. The file names the holder for messages.
#[cfg(unix)]
pub fn lock(out: &Path) -> Result<Owner, RunError> {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::io::AsRawFd;
    std::fs::create_dir_all(out).map_err(RunError::io(out))?;
    let lock = out.join(LOCK);
    for _ in 0..5 {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock)
            .map_err(RunError::io(&lock))?;
        // A look by `held_now` (a shared lock held for a moment) is waited
        // out: a few tries 20 ms apart; a run holds the lock for its life.
        let mut tries = 0;
        let taken = loop {
            // SAFETY: flock on a descriptor this function owns.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                break true;
            }
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(RunError::io(&lock)(error));
            }
            if tries == 5 {
                break false;
            }
            tries += 1;
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        if !taken {
            return Err(RunError::Busy {
                path: out.to_path_buf(),
                pid: holder(&lock),
            });
        }
        // The holder before may have removed the file between our open and
        // our lock: then ours is on a file no longer there; try again.
        let same = match (file.metadata(), std::fs::metadata(&lock)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        };
        if !same {
            continue;
        }
        file.set_len(0).map_err(RunError::io(&lock))?;
        writeln!(file, "{}", std::process::id()).map_err(RunError::io(&lock))?;
        return Ok(Owner { lock, _file: file });
    }
    Err(RunError::Busy {
        path: out.to_path_buf(),
        pid: holder(&lock),
    })
}

/// Whether a run holds the output folder `out` now: `Some` with the
/// process its lock file names (when it names one), `None` when no run
/// holds it (or, without `flock`, when that cannot be told). It only looks:
/// a shared lock tried and let go at once, never the lock file written.
#[cfg(unix)]
pub(crate) fn held_now(out: &Path) -> Option<Option<u32>> {
    use std::os::unix::io::AsRawFd;
    let lock = out.join(LOCK);
    let file = std::fs::File::open(&lock).ok()?;
    // SAFETY: flock on a descriptor this function owns; closing it (the
    // drop below) lets the shared lock go.
    let free = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0;
    drop(file);
    (!free).then(|| holder(&lock))
}

/// Without `flock` a lock file is there while a run holds the folder (or
/// after one was killed: that cannot be told apart, and a run would refuse
/// the folder as held too).
#[cfg(not(unix))]
pub(crate) fn held_now(out: &Path) -> Option<Option<u32>> {
    let lock = out.join(LOCK);
    lock.exists().then(|| holder(&lock))
}

/// Output folders locked by this process (a lock file naming this process's
/// id that is not in here was left by an earlier process that had the same
/// id, as happens in containers).
#[cfg(not(unix))]
static HELD: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

#[cfg(not(unix))]
fn held<R>(f: impl FnOnce(&mut HashSet<PathBuf>) -> R) -> R {
    let mut guard = HELD.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(HashSet::new))
}

/// Without `flock`: a lock file created exclusively, naming its process; a
/// file naming no live process cannot be told apart, so it is kept.
#[cfg(not(unix))]
pub fn lock(out: &Path) -> Result<Owner, RunError> {
    std::fs::create_dir_all(out).map_err(RunError::io(out))?;
    let folder = std::fs::canonicalize(out).map_err(RunError::io(out))?;
    let lock = out.join(LOCK);
    let me = std::process::id();
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&lock)
    {
        Ok(mut file) => {
            writeln!(file, "{me}").map_err(RunError::io(&lock))?;
            held(|h| h.insert(folder.clone()));
            Ok(Owner { lock, folder })
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(RunError::Busy {
            path: out.to_path_buf(),
            pid: holder(&lock),
        }),
        Err(e) => Err(RunError::io(&lock)(e)),
    }
}

/// With `--fresh`, removes a previous run's outputs from `out` (after
/// [`previous_results`] allowed it, and once the run is about to write).
pub fn start_fresh(
    out: &Path,
    options: &RunOptions,
    on_event: &mut dyn FnMut(&Event),
) -> Result<(), RunError> {
    if !options.fresh {
        return Ok(());
    }
    let removed = clear(out)?;
    if !removed.is_empty() {
        on_event(&Event::Cleared {
            output: out.to_path_buf(),
            removed,
        });
    }
    Ok(())
}

/// A previous run's results in `out`: without `--resume` a run refuses to
/// start over them, unless `--fresh` asked to clear them ([`start_fresh`]
/// does, later, reporting through `on_event`).
pub fn previous_results(out: &Path, options: &RunOptions) -> Result<(), RunError> {
    // Names a run writes, in a folder no run made (no plan, checkpoint or
    // model): the user's own files, which a run would overwrite or remove.
    let present = |f: &str| std::fs::symlink_metadata(out.join(f)).is_ok();
    let theirs: Vec<&str> = OUTPUTS.into_iter().filter(|f| present(f)).collect();
    let made_by_a_run = ["plan.json", "checkpoint.safetensors", "model.safetensors"]
        .into_iter()
        .any(present);
    if !theirs.is_empty() && !made_by_a_run {
        return Err(RunError::NotARunFolder {
            path: out.to_path_buf(),
            found: theirs.join(", "),
        });
    }
    if options.fresh || options.resume {
        // `--fresh` clears the folder later, once the data has been read
        // and surveyed ([`start_fresh`]): a run refused before it starts
        // removes nothing.
        return Ok(());
    }
    let found: Vec<&str> = ["checkpoint.safetensors", "model.safetensors"]
        .into_iter()
        .filter(|f| out.join(f).exists())
        .collect();
    if found.is_empty() {
        return Ok(());
    }
    Err(RunError::Occupied {
        path: out.to_path_buf(),
        found: found.join(" and "),
    })
}

/// Removes a previous run's outputs ([`OUTPUTS`]) from `out`; what removed.
fn clear(out: &Path) -> Result<Vec<String>, RunError> {
    let mut removed = Vec::new();
    for name in OUTPUTS {
        let path = out.join(name);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let result = if meta.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        result.map_err(|error| RunError::Remove {
            path: path.clone(),
            error,
        })?;
        removed.push(name.to_string());
    }
    Ok(removed)
}

/// Removes the folders under `out/steps` of steps not in this run, so that
/// the folder holds exactly this run's step results.
pub fn remove_other_steps(out: &Path, steps: &[&str]) -> Result<(), RunError> {
    let folder = out.join("steps");
    let Ok(entries) = std::fs::read_dir(&folder) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if steps.iter().any(|s| name == **s) {
            continue;
        }
        let path = entry.path();
        let result = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        result.map_err(|error| RunError::Remove { path, error })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_folder_is_locked_once_and_a_dead_holder_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let first = lock(&out).unwrap();
        // A second run, even in this process, is refused naming the holder.
        let e = lock(&out).unwrap_err();
        assert!(
            matches!(&e, RunError::Busy { pid: Some(p), .. } if *p == std::process::id()),
            "{e:?}"
        );
        assert!(
            e.to_string().contains(&std::process::id().to_string()),
            "{e}"
        );
        drop(first);
        assert!(!out.join(LOCK).exists());
        // A file left by a killed run holds no lock, whatever it names: a
        // dead process, process 0, a live one (this one), or nothing.
        for left in ["4194999\n", "0\n", &format!("{}\n", std::process::id()), ""] {
            std::fs::write(out.join(LOCK), left).unwrap();
            let taken = lock(&out).unwrap();
            assert_eq!(
                holder(&out.join(LOCK)),
                Some(std::process::id()),
                "{left:?}"
            );
            drop(taken);
        }
    }

    #[cfg(unix)]
    #[test]
    fn of_runs_racing_for_a_folder_exactly_one_takes_it() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join(LOCK), "4194999\n").unwrap(); // left by a killed run
        let barrier = std::sync::Barrier::new(8);
        let owners: Vec<Option<Owner>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        lock(&out).ok()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(owners.iter().filter(|o| o.is_some()).count(), 1);
    }

    #[test]
    fn previous_results_are_refused_or_cleared_never_mixed() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        // A folder no run made, holding names a run writes: refused, even fresh.
        std::fs::write(out.join("report.html"), b"mine").unwrap();
        for fresh in [false, true] {
            let options = RunOptions {
                fresh,
                ..Default::default()
            };
            let e = previous_results(out, &options).unwrap_err();
            assert!(e.to_string().contains("not a run folder"), "{e}");
        }
        assert!(out.join("report.html").exists());
        std::fs::write(out.join("plan.json"), b"{}").unwrap();
        std::fs::write(out.join("model.safetensors"), b"x").unwrap();
        std::fs::create_dir_all(out.join("steps/old")).unwrap();
        std::fs::write(out.join("notes.txt"), b"mine").unwrap();
        let mut events = Vec::new();
        let e = previous_results(out, &RunOptions::default()).unwrap_err();
        assert!(
            e.to_string().contains("--fresh") && e.to_string().contains("--resume"),
            "{e}"
        );
        let fresh = RunOptions {
            fresh: true,
            ..Default::default()
        };
        previous_results(out, &fresh).unwrap();
        assert!(
            out.join("model.safetensors").exists(),
            "nothing removed before the run starts"
        );
        start_fresh(out, &fresh, &mut |e| events.push(e.clone())).unwrap();
        assert!(!out.join("model.safetensors").exists() && !out.join("steps").exists());
        assert!(
            out.join("notes.txt").exists(),
            "only the run's own outputs are removed"
        );
        assert!(matches!(&events[..], [Event::Cleared { removed, .. }] if removed.len() == 4));

        std::fs::create_dir_all(out.join("steps/kept")).unwrap();
        std::fs::create_dir_all(out.join("steps/gone")).unwrap();
        remove_other_steps(out, &["kept"]).unwrap();
        assert!(out.join("steps/kept").exists() && !out.join("steps/gone").exists());
    }
}
