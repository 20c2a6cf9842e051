//! A run owns its output folder: an exclusive lock file while it runs, no
//! silent start over a previous run's results, and no file of an earlier
//! run's steps left beside this run's.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{Event, RunError, RunOptions};

/// The lock file, in the output folder.
pub const LOCK: &str = ".wfrun.lock";

/// What a run writes at the top of its folder: `--fresh` removes these and
/// nothing else.
pub const OUTPUTS: [&str; 10] = [
    "plan.json",
    "checkpoint.safetensors",
    "model.safetensors",
    "model.json",
    "metrics.jsonl",
    "embeddings.safetensors",
    "embeddings.csv",
    "report.html",
    "pictures",
    "steps",
];

/// Output folders locked by this process (a lock file naming this process's
/// id that is not in here was left by an earlier process that had the same
/// id, as happens in containers).
static HELD: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

fn held<R>(f: impl FnOnce(&mut HashSet<PathBuf>) -> R) -> R {
    let mut guard = HELD.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(HashSet::new))
}

/// The lock on an output folder; dropping it removes the lock file.
#[derive(Debug)]
pub struct Owner {
    lock: PathBuf,
    folder: PathBuf,
}

impl Drop for Owner {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.lock);
        held(|h| h.remove(&self.folder));
    }
}

/// Whether the process `pid` is alive (on this machine).
#[cfg(unix)]
fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only asks whether the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(not(unix))]
fn alive(_: u32) -> bool {
    true
}

/// Takes the output folder `out` (created if needed) for this run, or says
/// which process holds it. A lock left by a process that has ended is taken
/// over.
pub fn lock(out: &Path) -> Result<Owner, RunError> {
    std::fs::create_dir_all(out).map_err(RunError::io(out))?;
    let folder = std::fs::canonicalize(out).map_err(RunError::io(out))?;
    let lock = out.join(LOCK);
    let me = std::process::id();
    for _ in 0..3 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
        {
            Ok(mut file) => {
                writeln!(file, "{me}").map_err(RunError::io(&lock))?;
                held(|h| h.insert(folder.clone()));
                return Ok(Owner { lock, folder });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(&lock).unwrap_or_default();
                let holder = text.trim().parse::<u32>().ok();
                let live = match holder {
                    // No process has id 0 (kill(0, 0) would ask about our group).
                    Some(0) => false,
                    Some(pid) if pid == me => held(|h| h.contains(&folder)),
                    Some(pid) => alive(pid),
                    // Being written this instant, or garbage: a fresh one is live.
                    None => std::fs::metadata(&lock)
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| t.elapsed().is_ok_and(|d| d.as_secs() < 5)),
                };
                if live {
                    return Err(RunError::Busy {
                        path: out.to_path_buf(),
                        pid: holder,
                    });
                }
                // Stale: its process is gone. Remove it and try again.
                match std::fs::remove_file(&lock) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(RunError::io(&lock)(e)),
                }
            }
            Err(e) => return Err(RunError::io(&lock)(e)),
        }
    }
    Err(RunError::Busy {
        path: out.to_path_buf(),
        pid: None,
    })
}

/// A previous run's results in `out`: without `--resume` a run refuses to
/// start over them, unless `--fresh` asked to clear them (reported through
/// `on_event`).
pub fn previous_results(
    out: &Path,
    options: &RunOptions,
    on_event: &mut dyn FnMut(&Event),
) -> Result<(), RunError> {
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
    if options.fresh {
        let removed = clear(out)?;
        if !removed.is_empty() {
            on_event(&Event::Cleared {
                output: out.to_path_buf(),
                removed,
            });
        }
        return Ok(());
    }
    if options.resume {
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

    #[test]
    fn a_folder_is_locked_once_and_a_dead_holder_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let first = lock(&out).unwrap();
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
        // A lock naming a process that does not exist is stale (0 is none).
        std::fs::write(out.join(LOCK), "0\n").unwrap();
        drop(lock(&out).unwrap());
        std::fs::write(out.join(LOCK), "4194999\n").unwrap();
        let again = lock(&out).unwrap();
        // This process's id in a lock it does not hold: left by an earlier
        // process with the same id.
        drop(again);
        std::fs::write(out.join(LOCK), format!("{}\n", std::process::id())).unwrap();
        assert!(lock(&out).is_ok());
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
            let e = previous_results(out, &options, &mut |_| {}).unwrap_err();
            assert!(e.to_string().contains("not a run folder"), "{e}");
        }
        assert!(out.join("report.html").exists());
        std::fs::write(out.join("plan.json"), b"{}").unwrap();
        std::fs::write(out.join("model.safetensors"), b"x").unwrap();
        std::fs::create_dir_all(out.join("steps/old")).unwrap();
        std::fs::write(out.join("notes.txt"), b"mine").unwrap();
        let mut events = Vec::new();
        let e = previous_results(out, &RunOptions::default(), &mut |e| events.push(e.clone()))
            .unwrap_err();
        assert!(
            e.to_string().contains("--fresh") && e.to_string().contains("--resume"),
            "{e}"
        );
        let fresh = RunOptions {
            fresh: true,
            ..Default::default()
        };
        previous_results(out, &fresh, &mut |e| events.push(e.clone())).unwrap();
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
