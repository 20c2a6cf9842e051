//! Files written whole or not at all: each is written to `NAME.partial`
//! beside it, synced to the disk, then renamed over `NAME`, so a killed run or a full
//! disk never leaves a half-written file where a good one was.

use std::path::{Path, PathBuf};

/// `PATH.partial`, where `path` is written before it replaces `path`.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    PathBuf::from(tmp)
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
                    path.display()
                ),
            ));
        }
    }
    let tmp = partial_path(path);
    // A new file gets the mode any program's would (0666 less the umask),
    // whatever mode the writer creates it with (safetensors: 0600).
    let kept = std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions())
        .or_else(|| {
            std::fs::File::create(&tmp).ok()?;
            std::fs::metadata(&tmp).ok().map(|m| m.permissions())
        });
    let result = write(&tmp)
        .and_then(|()| match &kept {
            Some(p) => std::fs::set_permissions(&tmp, p.clone()),
            None => Ok(()),
        })
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
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
        assert!(!partial_path(&path).exists());
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

    #[test]
    fn a_directory_in_the_way_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d");
        std::fs::create_dir(&path).unwrap();
        assert!(write(&path, b"x").is_err());
        assert!(path.is_dir());
    }
}
