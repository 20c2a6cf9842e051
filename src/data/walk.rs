//! The one walk over data folders, shared by the checker and the run: it
//! follows symbolic links but enters each real folder once (a link loop or a
//! folder linked twice is not walked again), stops with an error above a
//! number of entries, refuses pseudo file systems (`/proc`, `/sys`, `/dev`)
//! and reports a folder it cannot read instead of skipping it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::DataError;

/// The most directory entries one listing visits before it stops with
/// [`DataError::TooManyFiles`].
pub const MAX_ENTRIES: usize = 2_000_000;

/// Folders whose contents are made by the kernel, not stored: walking them
/// never ends (`/proc`) or reads devices (`/dev`).
const PSEUDO: [&str; 3] = ["/proc", "/sys", "/dev"];

/// A walk's state: the real folders entered and the entries visited, shared
/// by every folder one listing walks.
pub(crate) struct Walk {
    /// Each real folder entered, with the concept it was walked for (`None`:
    /// the data folder itself).
    seen: HashMap<FolderId, Option<String>>,
    entries: usize,
    limit: usize,
    /// The folder the listing was asked for, named in errors.
    root: PathBuf,
    /// Each image file listed, with its concept's number in `concepts`: the
    /// same file again (a link or a hard link to it) is one image.
    files: crate::suggest::FastMap<FolderId, u32>,
    /// The concepts whose images were listed, in order.
    concepts: Vec<String>,
}

#[cfg(unix)]
type FolderId = (u64, u64);
#[cfg(not(unix))]
type FolderId = PathBuf;

#[cfg(unix)]
fn identity(_: &Path, meta: &std::fs::Metadata) -> Option<FolderId> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn identity(path: &Path, _: &std::fs::Metadata) -> Option<FolderId> {
    std::fs::canonicalize(path).ok()
}

/// A file's identity from its folder's metadata and its directory entry,
/// without reading the file's own (the entry holds its inode number).
#[cfg(unix)]
fn file_identity(folder: &std::fs::Metadata, entry: &std::fs::DirEntry) -> Option<FolderId> {
    use std::os::unix::fs::{DirEntryExt, MetadataExt};
    Some((folder.dev(), entry.ino()))
}

/// Elsewhere than on Unix files are told apart by path alone.
#[cfg(not(unix))]
fn file_identity(_: &std::fs::Metadata, _: &std::fs::DirEntry) -> Option<FolderId> {
    None
}

/// Whether `path` (resolved) lies in a pseudo file system.
fn pseudo(path: &Path) -> Option<&'static str> {
    let real = std::fs::canonicalize(path).ok()?;
    PSEUDO.into_iter().find(|p| real.starts_with(p))
}

impl Walk {
    pub fn new(root: &Path) -> Result<Walk, DataError> {
        Walk::with_limit(root, MAX_ENTRIES)
    }

    pub fn with_limit(root: &Path, limit: usize) -> Result<Walk, DataError> {
        if let Some(fs) = pseudo(root) {
            return Err(DataError::PseudoFileSystem {
                path: root.to_path_buf(),
                under: fs,
            });
        }
        Ok(Walk {
            seen: HashMap::new(),
            entries: 0,
            limit,
            root: root.to_path_buf(),
            files: Default::default(),
            concepts: Vec::new(),
        })
    }

    /// Counts one entry; an error once the listing passes its limit.
    pub fn visit(&mut self) -> Result<(), DataError> {
        self.entries += 1;
        if self.entries > self.limit {
            return Err(DataError::TooManyFiles {
                path: self.root.clone(),
                limit: self.limit,
            });
        }
        Ok(())
    }

    /// Marks the folder `path` entered for `concept`; `false` when it was
    /// entered for it before (through another link) and must not be walked
    /// again. A folder reached from two concepts (or leading back to the data
    /// folder) is an error: its images would belong to whichever came first.
    fn enter(
        &mut self,
        path: &Path,
        meta: &std::fs::Metadata,
        concept: Option<&str>,
    ) -> Result<bool, DataError> {
        let Some(id) = identity(path, meta) else {
            return Ok(true);
        };
        match self.seen.get(&id) {
            None => {
                self.seen.insert(id, concept.map(str::to_string));
                Ok(true)
            }
            Some(first) if first.as_deref() == concept => Ok(false),
            Some(first) => Err(DataError::SharedFolder {
                path: path.to_path_buf(),
                first: first.clone(),
                second: concept.map(str::to_string),
            }),
        }
    }

    /// Marks the image file `path` listed for `concept`; `false` when the
    /// same file was listed for it before (a link or a hard link to it): it
    /// is one image. The same file under two concepts is an error.
    fn first_time(&mut self, id: FolderId, path: &Path, this: u32) -> Result<bool, DataError> {
        match self.files.entry(id) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(this);
                Ok(true)
            }
            std::collections::hash_map::Entry::Occupied(o) if *o.get() == this => Ok(false),
            std::collections::hash_map::Entry::Occupied(o) => Err(DataError::SharedImage {
                path: path.to_path_buf(),
                concept: self.concepts[this as usize].clone(),
                first_concept: self.concepts[*o.get() as usize].clone(),
            }),
        }
    }

    /// Marks the data folder itself, so that a link back to it is reported.
    pub fn enter_root(&mut self, root: &Path) -> Result<(), DataError> {
        let meta = std::fs::metadata(root).map_err(|error| DataError::Io {
            path: root.to_path_buf(),
            error,
        })?;
        self.enter(root, &meta, None).map(|_| ())
    }

    /// The entries of one folder, sorted by name.
    pub fn read_dir(&mut self, dir: &Path) -> Result<Vec<std::fs::DirEntry>, DataError> {
        let io = |error| DataError::Io {
            path: dir.to_path_buf(),
            error,
        };
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            self.visit()?;
            entries.push(entry.map_err(io)?);
        }
        entries.sort_by_key(std::fs::DirEntry::file_name);
        Ok(entries)
    }

    /// Every image under the concept folder `dir` of `concept`, at any depth,
    /// sorted. Links are followed; a link to a pseudo file system, or to a
    /// folder walked for this concept already, is passed over (one walked for
    /// another concept is an error); a link that leads nowhere is listed when
    /// its name is an image's, so that reading it reports it; pipes and
    /// devices are not listed.
    pub fn images_of(&mut self, concept: &str, dir: &Path) -> Result<Vec<PathBuf>, DataError> {
        let mut found = Vec::new();
        if pseudo(dir).is_some() {
            return Ok(found); // a concept folder that links into /proc, say
        }
        // This concept's number, which its image files are marked with.
        let this = self.concepts.len() as u32;
        self.concepts.push(concept.to_string());
        let mut stack = vec![dir.to_path_buf()];
        while let Some(folder) = stack.pop() {
            let meta = std::fs::metadata(&folder).map_err(|error| DataError::Io {
                path: folder.clone(),
                error,
            })?;
            if !self.enter(&folder, &meta, Some(concept))? {
                continue;
            }
            for entry in self.read_dir(&folder)? {
                // Hidden entries (`.git`, macOS's `._IMG.jpg` companions) are
                // not images of the concept, as hidden concept folders are not
                // concepts.
                if entry.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                let path = entry.path();
                let kind = entry.file_type().map_err(|error| DataError::Io {
                    path: path.clone(),
                    error,
                })?;
                // Followed through a link; a link that leads nowhere is
                // listed (reading it reports it), a pipe or device is not.
                let (is_dir, is_file, file) = if kind.is_symlink() {
                    match std::fs::metadata(&path) {
                        Ok(m) => (
                            m.is_dir() && pseudo(&path).is_none(),
                            m.is_file(),
                            identity(&path, &m),
                        ),
                        Err(_) => (false, true, None),
                    }
                } else {
                    (kind.is_dir(), kind.is_file(), file_identity(&meta, &entry))
                };
                if is_dir {
                    stack.push(path);
                } else if is_file && super::is_image(&path) {
                    if let Some(id) = file {
                        if !self.first_time(id, &path, this)? {
                            continue;
                        }
                    }
                    found.push(path);
                }
            }
        }
        found.sort();
        Ok(found)
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn an_image_file_is_one_image_however_it_is_reached() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for c in ["circle", "square"] {
            std::fs::create_dir(root.join(c)).unwrap();
            std::fs::write(root.join(c).join("0.png"), c).unwrap();
            std::fs::write(root.join(c).join("1.png"), c).unwrap();
        }
        // Within one concept, a hard link and a link to one of its images:
        // listed once, as the first found.
        std::fs::hard_link(root.join("circle/0.png"), root.join("circle/hard.png")).unwrap();
        symlink("1.png", root.join("circle/link.png")).unwrap();
        let (folders, _) = crate::data::list_folder(root).unwrap();
        let circles: Vec<&str> = folders[0]
            .images
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(circles.len(), 2, "{circles:?}");
        assert_eq!(folders[1].images.len(), 2);
        // Under two concepts: an error naming the image and both concepts.
        symlink("../circle/0.png", root.join("square/2.png")).unwrap();
        let e = crate::data::list_folder(root).unwrap_err().to_string();
        assert!(
            e.contains(
                "square/2.png` (concept `square`) is the same file as an image of concept `circle`"
            ),
            "{e}"
        );
        std::fs::remove_file(root.join("square/2.png")).unwrap();
        std::fs::hard_link(root.join("circle/1.png"), root.join("square/3.png")).unwrap();
        let e = crate::data::list_folder(root).unwrap_err().to_string();
        assert!(e.contains("square/3.png` (concept `square`)"), "{e}");
    }

    #[test]
    fn a_link_loop_and_a_link_dag_are_walked_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // Each level links twice to the next: 2^20 paths, 21 real folders.
        for level in 0..=20 {
            std::fs::create_dir(root.join(format!("l{level}"))).unwrap();
            std::fs::write(root.join(format!("l{level}/x{level}.png")), b"").unwrap();
        }
        for level in 0..20 {
            let next = root.join(format!("l{}", level + 1));
            symlink(&next, root.join(format!("l{level}/a"))).unwrap();
            symlink(&next, root.join(format!("l{level}/b"))).unwrap();
        }
        symlink(root, root.join("l20/up")).unwrap();
        let started = std::time::Instant::now();
        let images = Walk::new(root)
            .unwrap()
            .images_of("", &root.join("l0"))
            .unwrap();
        assert_eq!(images.len(), 21, "{images:?}");
        assert!(started.elapsed().as_secs() < 5);
    }

    #[test]
    fn limits_pseudo_file_systems_and_unreadable_folders_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..30 {
            std::fs::write(dir.path().join(format!("{i}.png")), b"").unwrap();
        }
        std::fs::write(dir.path().join("._0.png"), b"").unwrap();
        std::fs::create_dir(dir.path().join(".hidden")).unwrap();
        std::fs::write(dir.path().join(".hidden/x.png"), b"").unwrap();
        let e = Walk::with_limit(dir.path(), 10)
            .unwrap()
            .images_of("", dir.path())
            .unwrap_err();
        assert!(
            matches!(e, DataError::TooManyFiles { limit: 10, .. }),
            "{e}"
        );
        if Path::new("/proc/self").exists() {
            let e = Walk::new(Path::new("/proc/self")).err().unwrap();
            assert!(e.to_string().contains("/proc"), "{e}");
            // A link into /proc inside a data folder is passed over, and so
            // is a concept folder that is one.
            symlink("/proc", dir.path().join("proc")).unwrap();
            let found = Walk::new(dir.path())
                .unwrap()
                .images_of("", dir.path())
                .unwrap();
            assert_eq!(found.len(), 30, "hidden files and folders are passed over");
            let linked = Walk::new(dir.path())
                .unwrap()
                .images_of("", &dir.path().join("proc"));
            assert_eq!(linked.unwrap(), Vec::<PathBuf>::new());
        }
    }
}
