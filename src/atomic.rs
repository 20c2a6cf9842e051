//! Files written whole or not at all: each is written to `NAME.PID-N.partial`
//! beside it, synced to the disk, then renamed over `NAME`, so a killed run or a full
//! disk never leaves a half-written file where a good one was, and two writers of
//! one file (two `wfrun embed -o out` at once) never write into each other's
//! partial file: the last rename wins, whole. `N` is drawn at random and the
//! partial file is created only where nothing is (`O_EXCL`, which follows no
//! link), so a link or pipe planted at a guessed name is never written
//! through.

use crate::paths::ShowPath;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// `PATH.PID-N.partial`, where `path` is written before it replaces `path`:
/// a name no other write (in this process or another) uses at the same time,
/// `N` a number no other process can guess.
pub fn partial_path(path: &Path) -> PathBuf {
    use std::hash::{BuildHasher, Hasher};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // std's hasher keys come from the system's random source.
    let mut n = std::collections::hash_map::RandomState::new().build_hasher();
    n.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}-{}.partial", std::process::id(), n.finish()));
    PathBuf::from(tmp)
}

/// A new, empty partial file for `path`, created where nothing was.
fn create_partial(path: &Path) -> std::io::Result<PathBuf> {
    new_partial(path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot create a file beside `{}`: {e}", path.shown()),
        )
    })
}

/// [`create_partial`] with the system's error as it is.
fn new_partial(path: &Path) -> std::io::Result<PathBuf> {
    let mut tries = 0;
    loop {
        let tmp = partial_path(path);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(_) => return Ok(tmp),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 16 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

/// The folders [`probe`] made for a file not yet written. Dropped, it
/// removes those still empty, innermost first, so a command that fails
/// after the probe leaves no empty folder behind; [`Made::keep`] leaves
/// them once the file is written.
#[must_use = "dropping it removes the folders it made"]
#[derive(Debug, Default)]
pub struct Made(Vec<PathBuf>);

impl Made {
    /// The folders stay (the file was written in them).
    pub fn keep(mut self) {
        self.0.clear();
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        // `remove_dir` removes only an empty folder: anything another
        // process wrote there meanwhile stays, and so does its folder.
        for dir in self.0.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Whether a file can be written at `path` now, for a command that works
/// long before it writes: its folder made where missing (as the write would
/// make it), a partial file created beside it and removed. The error says
/// why in words; the folders made are returned, to be removed again if the
/// command fails before it writes.
pub fn probe(path: &Path) -> std::io::Result<Made> {
    use std::io::{Error, ErrorKind};
    let words = |e: Error| {
        let why = match e.kind() {
            ErrorKind::PermissionDenied => {
                "permission denied (this user may not write there)".to_string()
            }
            ErrorKind::ReadOnlyFilesystem => "the file system there is read-only".to_string(),
            ErrorKind::StorageFull => "the disk is full".to_string(),
            ErrorKind::NotADirectory => "a file is in the way of its folder".to_string(),
            ErrorKind::NotFound => "no file can be made there".to_string(),
            _ => e.to_string(),
        };
        Error::new(e.kind(), why)
    };
    let mut made = Made::default();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Outermost first, one at a time, and only those this call created
        // are recorded: a folder that was there (or that another process
        // made meanwhile) is never removed, and `a/../b` records `a` and,
        // where it was missing, `b`, by the names they were made by.
        let mut chain: Vec<&Path> = dir
            .ancestors()
            .filter(|a| !a.as_os_str().is_empty())
            .collect();
        chain.reverse();
        for folder in chain {
            match std::fs::create_dir(folder) {
                Ok(()) => made.0.push(folder.to_path_buf()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && folder.is_dir() => {}
                Err(e) => return Err(words(e)),
            }
        }
    }
    let tmp = new_partial(path).map_err(words)?;
    let _ = std::fs::remove_file(tmp);
    Ok(made)
}

/// Removes the partial files of `path` that processes no longer running left
/// (killed mid-write), so they do not pile up beside it. Where it cannot
/// tell which processes run (no `/proc`), it leaves them.
fn clear_stale(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return;
    }
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!("{}.", name.to_string_lossy());
    for entry in entries.flatten() {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        let Some(pid) = file
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".partial"))
            .and_then(|id| id.split_once('-'))
            .and_then(|(pid, n)| n.parse::<u64>().is_ok().then_some(pid))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !proc.join(pid.to_string()).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Writes `path` atomically: `write` fills the partial file beside it, which
/// is synced to the disk and then replaces `path`. On failure the partial
/// file is removed and `path` is left as it was. A link is written through
/// (the file it leads to is replaced, the link stays), and a file replaced
/// keeps its permissions.
pub fn replace(
    path: &Path,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    let target = match is_link {
        true => std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
        false => path.to_path_buf(),
    };
    let path = target.as_path();
    // A device, a pipe or a folder is never replaced by a file (through a
    // link neither: `-o out` linked to `/dev/full` must not remove the device).
    if let Ok(m) = std::fs::metadata(path) {
        if !m.is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "`{}` is not a regular file, and only files are replaced; choose another name",
                    path.shown()
                ),
            ));
        }
    }
    clear_stale(path);
    let tmp = create_partial(path)?;
    // A new file gets the mode any program's would (0666 less the umask),
    // whatever mode the writer creates it with (safetensors: 0600).
    let kept = std::fs::metadata(path)
        .or_else(|_| std::fs::metadata(&tmp))
        .ok()
        .map(|m| m.permissions());
    let result = write(&tmp)
        .and_then(|()| match &kept {
            Some(p) => std::fs::set_permissions(&tmp, p.clone()),
            None => Ok(()),
        })
        .map(|()| keep_owner(path, &tmp))
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Gives `tmp` the owner and group of the file it replaces, where they
/// differ and the process may (a file of another user rewritten by root stays
/// theirs); elsewhere nothing.
fn keep_owner(path: &Path, tmp: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(old), Ok(new)) = (std::fs::metadata(path), std::fs::metadata(tmp)) {
            if (old.uid(), old.gid()) != (new.uid(), new.gid()) {
                // Only a privileged process may give a file away; for others
                // the file becomes theirs, as any editor's save makes it.
                let _ = std::os::unix::fs::chown(tmp, Some(old.uid()), Some(old.gid()));
            }
        }
    }
    let _ = (path, tmp);
}

/// Writes `bytes` to `path` atomically.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    replace(path, |tmp| std::fs::write(tmp, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_partial() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        write(&path, b"old").unwrap();
        let err = replace(&path, |tmp| {
            std::fs::write(tmp, b"half")?;
            Err(std::io::Error::other("disk full"))
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["a.txt"], "no partial file left");
        write(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
    }

    #[cfg(unix)]
    #[test]
    fn devices_and_folders_are_never_replaced_even_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("out.safetensors");
        std::os::unix::fs::symlink("/dev/null", &link).unwrap();
        let err = write(&link, b"x").unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device());
        let folder = dir.path().join("folder");
        std::fs::create_dir(&folder).unwrap();
        assert!(write(&folder, b"x").is_err());
        assert!(folder.is_dir());
    }

    #[cfg(unix)]
    #[test]
    fn links_are_written_through_and_permissions_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.wf");
        let link = dir.path().join("link.wf");
        write(&real, b"old").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write(&link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
        let mode = std::fs::metadata(&real).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    /// Whatever waits at a partial file's name (a link, a pipe, a folder) is
    /// never written through: the partial file is another, new file.
    #[cfg(unix)]
    #[test]
    fn nothing_planted_beside_the_file_is_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.wf");
        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, b"keep").unwrap();
        // Every name this process could draw next cannot be planted, but the
        // old guessable ones could: plant links at them, and a folder.
        let pid = std::process::id();
        for n in 0..64 {
            let planted = dir.path().join(format!("t.wf.{pid}-{n}.partial"));
            std::os::unix::fs::symlink(&victim, planted).unwrap();
        }
        write(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert!(!std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
        // Two names drawn one after the other differ, and are not a count.
        let (a, b) = (partial_path(&path), partial_path(&path));
        assert_ne!(a, b);
        assert!(!a.to_string_lossy().ends_with(&format!("{pid}-0.partial")));
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn writers_of_one_file_at_once_leave_one_of_them_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        // Each writer's bytes are its own number repeated, written in pieces
        // so that the writes interleave.
        let contents: Vec<Vec<u8>> = (0..8u8).map(|i| vec![b'a' + i; 1 << 16]).collect();
        for _ in 0..5 {
            std::thread::scope(|s| {
                for c in &contents {
                    let path = &path;
                    s.spawn(move || {
                        replace(path, |tmp| {
                            use std::io::Write;
                            let mut f = std::fs::File::create(tmp)?;
                            for piece in c.chunks(4096) {
                                f.write_all(piece)?;
                                std::thread::yield_now();
                            }
                            Ok(())
                        })
                        .unwrap()
                    });
                }
            });
            let got = std::fs::read(&path).unwrap();
            assert!(contents.contains(&got), "a mix of writers' bytes");
            assert_eq!(names(dir.path()), ["out.bin"], "no partial file left");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn partial_files_of_processes_gone_are_cleared_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        // No process has this id (above the kernel's largest, 2^22).
        let gone = dir.path().join("out.bin.4194305-0.partial");
        // This process is running: its partial file is another write's.
        let running = dir
            .path()
            .join(format!("out.bin.{}-99.partial", std::process::id()));
        let other = dir.path().join("other.bin.4194305-0.partial");
        for p in [&gone, &running, &other] {
            std::fs::write(p, b"half").unwrap();
        }
        write(&path, b"whole").unwrap();
        assert!(!gone.exists());
        assert!(running.exists() && other.exists());
        assert_eq!(std::fs::read(&path).unwrap(), b"whole");
    }

    #[test]
    fn a_directory_in_the_way_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d");
        std::fs::create_dir(&path).unwrap();
        assert!(write(&path, b"x").is_err());
        assert!(path.is_dir());
    }
}
