//! Training images: a folder with one sub-folder per concept, or a manifest
//! (CSV or JSON lines) of images and their concepts; the held-out split.
//!
//! Listing images needs no decoder (the checker uses it); decoding and
//! preprocessing live in [`images`] (feature `train`).

#[cfg(feature = "train")]
pub mod images;
mod manifest;
mod walk;

pub use walk::MAX_ENTRIES;

use crate::paths::ShowPath;
use std::fmt;
use std::path::{Path, PathBuf};

/// File extensions read as images (compared without case).
pub const IMAGE_EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "webp", "bmp"];

pub fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// One image and the indices of its concepts.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub path: PathBuf,
    pub concepts: Vec<usize>,
    /// Where the manifest lists it (the first place, if several do);
    /// `None` for an image found in a folder.
    pub listed: Option<ListedAt>,
}

/// Where a manifest lists an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListedAt {
    /// On this line (1-based).
    Line(usize),
    /// As this element (1-based) of a whole-file JSON array.
    Element(usize),
}

impl std::fmt::Display for ListedAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListedAt::Line(n) => write!(f, "line {n}"),
            ListedAt::Element(n) => write!(f, "element {n}"),
        }
    }
}

/// A file's device and inode, which its hard links share (`None` elsewhere
/// than on Unix, or when it cannot be read).
pub(crate) fn file_id(path: &Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// What tells one image file from another: its device and inode where they
/// can be read ([`file_id`]: links, hard links and every spelling of a path
/// lead to the same), else its path with `.` and `..` taken out.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum ImageId {
    Inode(u64, u64),
    Path(PathBuf),
}

impl ImageId {
    fn of(path: &Path) -> ImageId {
        match file_id(path) {
            Some((dev, ino)) => ImageId::Inode(dev, ino),
            None => ImageId::Path(crate::check::normalize(path)),
        }
    }
}

/// Images with their concepts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dataset {
    /// Concept names, in index order.
    pub concepts: Vec<String>,
    pub samples: Vec<Sample>,
    /// Where a manifest lists an image listed before, and where it was
    /// first: merged into that first listing (their concepts joined).
    pub duplicates: Vec<(ListedAt, ListedAt)>,
}

/// What is wrong with a data folder or manifest; each names the path involved.
#[derive(Debug)]
pub enum DataError {
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    NotAFolder(PathBuf),
    NoImages(PathBuf),
    /// A manifest with no image lines (perhaps only a header).
    EmptyManifest(PathBuf),
    /// A folder walk passed [`MAX_ENTRIES`] entries.
    TooManyFiles {
        path: PathBuf,
        limit: usize,
    },
    /// Concept folders whose names cannot name a concept, every one of
    /// them (in name order): a name that is not UTF-8 text would print, and
    /// be recorded, as another name; one with a control character would
    /// reach terminals and reports as a command, or break a line.
    BadConceptNames(Vec<(PathBuf, BadName)>),
    /// Images whose paths are not UTF-8 text, every one of them: their
    /// paths could not be written to the run's CSV and JSON files as they
    /// are (they would name no file).
    BadImageNames(Vec<PathBuf>),
    /// A folder reached from two concepts (`None`: the data folder itself),
    /// through links.
    SharedFolder {
        path: PathBuf,
        first: Option<String>,
        second: Option<String>,
    },
    /// One image file in two concept folders (through a link or a hard link).
    SharedImage {
        path: PathBuf,
        concept: String,
        first_concept: String,
    },
    /// A data folder inside `/proc`, `/sys` or `/dev`.
    PseudoFileSystem {
        path: PathBuf,
        under: &'static str,
    },
    SingleConcept {
        path: PathBuf,
        concept: String,
    },
    Manifest {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataError::Io { path, error } => write!(f, "cannot read `{}`: {error}", path.shown()),
            DataError::NotAFolder(p) => write!(f, "`{}` is not a folder", p.shown()),
            DataError::NoImages(p) => write!(
                f,
                "`{}` holds no images in concept sub-folders; put them in `{}/CONCEPT/IMAGE.jpg`",
                p.shown(),
                p.shown()
            ),
            DataError::EmptyManifest(p) => write!(
                f,
                "the manifest `{}` lists no images; add one line per image: `path,concept` \
                 (paths relative to the manifest's folder)",
                p.shown()
            ),
            DataError::TooManyFiles { path, limit } => write!(
                f,
                "`{}` holds more than {limit} files and folders; point the workflow at the \
                 images' own folder, or list them in a manifest",
                path.shown()
            ),
            DataError::BadConceptNames(bad) => match bad.as_slice() {
                [(p, why)] => write!(
                    f,
                    "the concept folder `{}` {}; rename it",
                    p.shown(),
                    why.long()
                ),
                _ => {
                    write!(
                        f,
                        "{} concept folders cannot name concepts; rename them:",
                        bad.len()
                    )?;
                    for (i, (p, why)) in bad.iter().enumerate() {
                        let sep = if i == 0 { " " } else { ", " };
                        write!(f, "{sep}`{}` ({})", p.shown(), why.short())?;
                    }
                    Ok(())
                }
            },
            DataError::BadImageNames(bad) => {
                match bad.as_slice() {
                    [p] => write!(f, "the image `{}` is not named in UTF-8 text", p.shown())?,
                    _ => {
                        write!(f, "{} images are not named in UTF-8 text:", bad.len())?;
                        for (i, p) in bad.iter().take(3).enumerate() {
                            let sep = if i == 0 { " " } else { ", " };
                            write!(f, "{sep}`{}`", p.shown())?;
                        }
                        if bad.len() > 3 {
                            write!(f, " and {} more", bad.len() - 3)?;
                        }
                    }
                }
                f.write_str(if bad.len() == 1 {
                    "; rename it (its path is written to the results as text)"
                } else {
                    "; rename them (their paths are written to the results as text)"
                })
            }
            DataError::SharedImage {
                path,
                concept,
                first_concept,
            } => write!(
                f,
                "`{0}` (concept `{concept}`) is the same file as an image of concept \
                 `{first_concept}`, through a link or a hard link (`find DATA -samefile {0}` \
                 shows it): one image under two concepts would be trained under one and held \
                 out under the other; remove one of them, or give the image both concepts in a \
                 manifest",
                path.shown()
            ),
            DataError::SharedFolder {
                path,
                first,
                second,
            } => {
                let name = |c: &Option<String>| match c {
                    Some(c) => format!("concept `{c}`"),
                    None => "the data folder itself".to_string(),
                };
                write!(
                    f,
                    "`{}` is reached (through a link) from both {} and {}: its images would \
                     belong to whichever comes first; remove the link",
                    path.shown(),
                    name(first),
                    name(second)
                )
            }
            DataError::PseudoFileSystem { path, under } => write!(
                f,
                "`{}` lies in `{under}`, a file system the kernel makes up, not a folder of images",
                path.shown()
            ),
            DataError::SingleConcept { path, concept } => write!(
                f,
                "`{}` holds a single concept, `{concept}`: training needs at least two",
                path.shown()
            ),
            DataError::Manifest {
                path,
                line,
                message,
            } if *line == 0 => write!(f, "{}: {message}", path.shown()),
            DataError::Manifest {
                path,
                line,
                message,
            } => write!(f, "{}:{line}: {message}", path.shown()),
        }
    }
}

impl std::error::Error for DataError {}

/// A concept folder: its name and its images (sorted), found at any depth.
#[derive(Clone, Debug, PartialEq)]
pub struct ConceptFolder {
    pub name: String,
    pub images: Vec<PathBuf>,
}

/// Lists the concept sub-folders of `root` (in name order, hidden ones
/// skipped) with their images, and the images lying in `root` itself. The
/// walk is bounded ([`walk`]): a folder that cannot be read is an error
/// naming it, not a concept without images.
///
/// Within [`Listings::during`] a folder listed before is answered from the
/// listings instead of walked again.
pub fn list_folder(root: &Path) -> Result<(Vec<ConceptFolder>, Vec<PathBuf>), DataError> {
    let shared = SHARED.with(|s| s.borrow().clone());
    let Some(shared) = shared else {
        return walk_folder(root);
    };
    if let Some(known) = shared.get(root) {
        return Ok(known);
    }
    let listed = walk_folder(root)?;
    shared.put(root, &listed);
    Ok(listed)
}

/// A folder's listing: its concept folders and its loose images.
type Listing = (Vec<ConceptFolder>, Vec<PathBuf>);

thread_local! {
    /// The listings [`list_folder`] answers from on this thread, if any.
    static SHARED: std::cell::RefCell<Option<Listings>> = const { std::cell::RefCell::new(None) };
}

/// Folder listings kept for the length of one command: checking many
/// workflow files that name the same data folder walks it once
/// ([`crate::CheckOptions::listings`]). Only folders listed without an error
/// are kept, under the path as written; a long-lived program (an editor)
/// makes a new one for each command so that it never answers from a stale
/// listing.
#[derive(Clone, Debug, Default)]
pub struct Listings(std::sync::Arc<std::sync::Mutex<std::collections::HashMap<PathBuf, Listing>>>);

impl Listings {
    pub fn new() -> Listings {
        Listings::default()
    }

    fn get(&self, root: &Path) -> Option<Listing> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(root)
            .cloned()
    }

    fn put(&self, root: &Path, listing: &Listing) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(root.to_path_buf(), listing.clone());
    }

    /// Runs `f` with [`list_folder`] answering from these listings on this
    /// thread (and adding to them), as it did before afterwards.
    pub(crate) fn during<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Restore(Option<Listings>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let before = self.0.take();
                SHARED.with(|s| *s.borrow_mut() = before);
            }
        }
        let _restore = Restore(SHARED.with(|s| s.borrow_mut().replace(self.clone())));
        f()
    }
}

/// Why a folder's name cannot name a concept ([`DataError::BadConceptNames`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadName {
    NotUtf8,
    Control,
}

impl BadName {
    fn long(self) -> &'static str {
        match self {
            BadName::NotUtf8 => "is not named in UTF-8 text",
            BadName::Control => {
                "has a control character in its name (a tab, a line break or a terminal escape)"
            }
        }
    }

    fn short(self) -> &'static str {
        match self {
            BadName::NotUtf8 => "not UTF-8 text",
            BadName::Control => "a control character",
        }
    }
}

/// An error naming every image of a data folder's listing whose path is
/// not UTF-8 text: a run writes each image's path to its CSV and JSON
/// files. Images outside the concept folders count only when no concept
/// folder holds one (they are used only then).
pub fn named_in_text(concepts: &[ConceptFolder], loose: &[PathBuf]) -> Result<(), DataError> {
    let used = concepts.iter().flat_map(|c| &c.images);
    if concepts.iter().all(|c| c.images.is_empty()) {
        paths_in_text(used.chain(loose))
    } else {
        paths_in_text(used)
    }
}

/// An error naming every one of `paths` that is not UTF-8 text
/// ([`DataError::BadImageNames`]).
pub fn paths_in_text<'a>(paths: impl Iterator<Item = &'a PathBuf>) -> Result<(), DataError> {
    let mut unnamed: Vec<PathBuf> = paths.filter(|p| p.to_str().is_none()).cloned().collect();
    if unnamed.is_empty() {
        return Ok(());
    }
    unnamed.sort();
    Err(DataError::BadImageNames(unnamed))
}

/// [`list_folder`] without the shared listings.
fn walk_folder(root: &Path) -> Result<Listing, DataError> {
    if !root.is_dir() {
        return Err(if root.exists() {
            DataError::NotAFolder(root.to_path_buf())
        } else {
            DataError::Io {
                path: root.to_path_buf(),
                error: std::io::Error::new(std::io::ErrorKind::NotFound, "no such folder"),
            }
        });
    }
    let mut walk = walk::Walk::new(root)?;
    walk.enter_root(root)?;
    let mut concepts = Vec::new();
    let mut loose = Vec::new();
    let mut bad = Vec::new();
    for entry in walk.read_dir(root)? {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                bad.push((path, BadName::NotUtf8));
                continue;
            };
            if name.chars().any(char::is_control) {
                bad.push((path, BadName::Control));
                continue;
            }
            if !bad.is_empty() {
                // Its images would not be used: the walk stops at the end.
                continue;
            }
            let images = walk.images_of(&name, &path)?;
            concepts.push(ConceptFolder { name, images });
        } else if is_image(&path) {
            loose.push(path);
        }
    }
    if !bad.is_empty() {
        bad.sort_by(|a, b| a.0.cmp(&b.0));
        return Err(DataError::BadConceptNames(bad));
    }
    Ok((concepts, loose))
}

impl Dataset {
    /// The images of a folder with one sub-folder per concept. Empty concept
    /// folders are left out (the checker warns about them).
    pub fn from_folder(root: &Path) -> Result<Dataset, DataError> {
        let data = Dataset::read_folder(root)?;
        data.require_two_concepts(root)?;
        Ok(data)
    }

    /// As [`Dataset::from_folder`], for an evaluation set or a base model's
    /// images: one concept is enough, and a folder without concept
    /// sub-folders holding images is a set of unlabelled images (no
    /// concepts, each sample's list empty).
    pub fn read_folder(root: &Path) -> Result<Dataset, DataError> {
        let (folders, loose) = list_folder(root)?;
        named_in_text(&folders, &loose)?;
        if folders.iter().all(|f| f.images.is_empty()) && !loose.is_empty() {
            return Ok(Dataset {
                samples: loose
                    .into_iter()
                    .map(|path| Sample {
                        path,
                        concepts: Vec::new(),
                        listed: None,
                    })
                    .collect(),
                ..Dataset::default()
            });
        }
        let mut data = Dataset::default();
        for folder in folders.into_iter().filter(|f| !f.images.is_empty()) {
            let index = data.concepts.len();
            data.concepts.push(folder.name);
            data.samples
                .extend(folder.images.into_iter().map(|path| Sample {
                    path,
                    concepts: vec![index],
                    listed: None,
                }));
        }
        if data.samples.is_empty() {
            return Err(DataError::NoImages(root.to_path_buf()));
        }
        Ok(data)
    }

    /// The images of a manifest ([`manifest`]): CSV (RFC 4180, an optional
    /// header) or JSON lines. Paths are relative to the manifest's folder;
    /// concepts are numbered in order of appearance.
    pub fn from_manifest(path: &Path) -> Result<Dataset, DataError> {
        let data = Dataset::read_manifest(path)?;
        data.require_two_concepts(path)?;
        Ok(data)
    }

    /// As [`Dataset::from_manifest`], for an evaluation set: one concept is enough.
    pub fn read_manifest(path: &Path) -> Result<Dataset, DataError> {
        Dataset::manifest_rows(path, true)
    }

    /// A manifest of images to embed: as [`Dataset::read_manifest`], and a
    /// line may give a path alone (its image has no concept).
    pub fn read_image_list(path: &Path) -> Result<Dataset, DataError> {
        Dataset::manifest_rows(path, false)
    }

    fn manifest_rows(path: &Path, labels: bool) -> Result<Dataset, DataError> {
        let rows = manifest::read_rows(path, labels)?;
        if rows.is_empty() {
            return Err(DataError::EmptyManifest(path.to_path_buf()));
        }
        let base = path.parent().unwrap_or(Path::new(""));
        let mut data = Dataset::default();
        let mut index_of: std::collections::HashMap<String, usize> = Default::default();
        // An image is its file: the same file by another spelling
        // (`./a.png`, `x/../a.png`, absolute) or through a link is the same
        // image, so that it cannot be both trained on and held out.
        let mut listed: std::collections::HashMap<ImageId, usize> = Default::default();
        for row in rows {
            let mut indices = Vec::new();
            for name in row.concepts {
                let next = data.concepts.len();
                let index = *index_of.entry(name.clone()).or_insert(next);
                if index == next {
                    data.concepts.push(name);
                }
                if !indices.contains(&index) {
                    indices.push(index);
                }
            }
            let at = Some(match row.element {
                true => ListedAt::Element(row.line),
                false => ListedAt::Line(row.line),
            });
            let path = base.join(row.path);
            let id = ImageId::of(&path);
            if let Some(&first) = listed.get(&id) {
                if let (Some(again), Some(before)) = (at, data.samples[first].listed) {
                    data.duplicates.push((again, before));
                }
                let merged = &mut data.samples[first].concepts;
                for c in indices {
                    if !merged.contains(&c) {
                        merged.push(c);
                    }
                }
                continue;
            }
            listed.insert(id, data.samples.len());
            data.samples.push(Sample {
                path,
                concepts: indices,
                listed: at,
            });
        }
        Ok(data)
    }

    fn require_two_concepts(&self, path: &Path) -> Result<(), DataError> {
        match self.concepts.len() {
            0 => Err(DataError::NoImages(path.to_path_buf())),
            1 => Err(DataError::SingleConcept {
                path: path.to_path_buf(),
                concept: self.concepts[0].clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Whether some image has several concepts (needs sigmoid units).
    pub fn is_multi_label(&self) -> bool {
        self.samples.iter().any(|s| s.concepts.len() > 1)
    }

    /// Each sample's stratum for holding out evaluation images ([`split`]):
    /// its first concept (a multi-label image's first listed one); an
    /// unlabelled sample's is 0.
    pub fn strata(&self) -> Vec<usize> {
        self.samples
            .iter()
            .map(|s| s.concepts.first().copied().unwrap_or(0))
            .collect()
    }
}

/// A small deterministic generator (SplitMix64), so splits and shuffles
/// depend on the seed alone.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x6A09_E667_F3BC_C909)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_f64() * n as f64) as usize % n.max(1)
    }

    /// A standard normal value (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.next_f64().max(f64::MIN_POSITIVE);
        let v = self.next_f64();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    /// Fisher-Yates.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// Splits samples into (training, held-out) indices, stratified:
/// `strata[i]` is sample `i`'s stratum (its first concept, see
/// [`Dataset::strata`]), and each stratum holds out its own share as
/// `plan::split_counts` decides — at least one of a stratum of two or more,
/// none of a stratum of one. Which samples are held out follows from `seed`
/// alone.
pub fn split(strata: &[usize], fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..strata.len()).collect();
    Rng::new(seed).shuffle(&mut order);
    let groups = strata.iter().max().map_or(0, |m| m + 1);
    let mut sizes = vec![0u64; groups];
    for &s in strata {
        sizes[s] += 1;
    }
    let mut left: Vec<u64> = sizes
        .iter()
        .map(|&n| crate::plan::split_counts(n, fraction).1)
        .collect();
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    for i in order {
        let held = &mut left[strata[i]];
        if *held > 0 {
            *held -= 1;
            eval.push(i);
        } else {
            train.push(i);
        }
    }
    eval.sort_unstable();
    train.sort_unstable();
    (train, eval)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"").unwrap();
    }

    #[test]
    fn folders_list_concepts_and_images() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        touch(&root.join("cat/b.png"));
        touch(&root.join("cat/a.JPG"));
        touch(&root.join("dog/deep/c.webp"));
        touch(&root.join("dog/notes.txt"));
        std::fs::create_dir_all(root.join("empty")).unwrap();
        touch(&root.join(".hidden/x.png"));
        touch(&root.join("loose.bmp"));
        let (folders, loose) = list_folder(root).unwrap();
        let names: Vec<&str> = folders.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["cat", "dog", "empty"]);
        assert_eq!(
            folders[0].images,
            [root.join("cat/a.JPG"), root.join("cat/b.png")]
        );
        assert_eq!(loose, [root.join("loose.bmp")]);
        let data = Dataset::from_folder(root).unwrap();
        assert_eq!(data.concepts, ["cat", "dog"]);
        assert_eq!(data.samples.len(), 3);
        assert_eq!(data.samples[2].concepts, [1]);
    }

    #[test]
    fn folder_problems_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let e = Dataset::from_folder(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("holds no images") && e.contains(&dir.path().shown().to_string()),
            "{e}"
        );
        touch(&dir.path().join("only/a.png"));
        let e = Dataset::from_folder(dir.path()).unwrap_err().to_string();
        assert!(e.contains("single concept, `only`"), "{e}");
        let e = Dataset::from_folder(&dir.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope") && e.contains("no such folder"), "{e}");
    }

    #[test]
    fn images_not_named_in_utf8_are_refused_every_one_named() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        touch(&dir.path().join("cat/a.png"));
        touch(&dir.path().join("dog/b.png"));
        let name = |bytes: &[u8]| std::ffi::OsStr::from_bytes(bytes).to_owned();
        touch(&dir.path().join("dog").join(name(b"caf\xe9.png")));
        let e = Dataset::from_folder(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("dog/caf\u{fffd}.png` is not named in UTF-8 text; rename it"),
            "{e}"
        );
        for i in 0..4u8 {
            touch(&dir.path().join("cat").join(name(&[
                b'x',
                0xff,
                b'0' + i,
                b'.',
                b'p',
                b'n',
                b'g',
            ])));
        }
        let e = Dataset::from_folder(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("5 images are not named in UTF-8 text: `")
                && e.contains(" and 2 more; rename them"),
            "{e}"
        );
        // Beside concept folders, a loose image is not used: not refused.
        std::fs::remove_dir_all(dir.path().join("cat")).unwrap();
        std::fs::remove_file(dir.path().join("dog").join(name(b"caf\xe9.png"))).unwrap();
        touch(&dir.path().join("cat/a.png"));
        touch(&dir.path().join(name(b"loose\xff.png")));
        assert!(Dataset::from_folder(dir.path()).is_ok());
    }

    #[test]
    fn a_concept_named_with_a_control_character_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        touch(&dir.path().join("cat/a.png"));
        touch(&dir.path().join("dog\u{1b}]0;owned\u{7}/b.png"));
        let e = Dataset::from_folder(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("dog\\u{1b}]0;owned\\u{7}") && e.contains("control character"),
            "{e}"
        );
        assert!(!e.contains('\u{1b}'), "{e}");
        // Every folder that cannot name a concept is named at once.
        use std::os::unix::ffi::OsStrExt;
        touch(&dir.path().join("ant\tx/c.png"));
        let latin1 = dir.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
        touch(&latin1.join("d.png"));
        let e = Dataset::from_folder(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("3 concept folders cannot name concepts; rename them: "),
            "{e}"
        );
        let (ant, caf, dog) = (
            e.find("ant\\tx` (a control character)").unwrap(),
            e.find("caf\u{fffd}` (not UTF-8 text)").unwrap(),
            e.find("dog\\u{1b}]0;owned\\u{7}` (a control character)")
                .unwrap(),
        );
        assert!(ant < caf && caf < dog, "{e}");
        let manifest = dir.path().join("m.csv");
        std::fs::write(
            &manifest,
            "path,concept\ncat/a.png,cat\ncat/a.png,\"x\u{1b}[2Jy\"\n",
        )
        .unwrap();
        let e = Dataset::from_manifest(&manifest).unwrap_err().to_string();
        assert!(e.contains("m.csv:3") && e.contains("x\\u{1b}[2Jy"), "{e}");
        assert!(!e.contains('\u{1b}'), "{e}");
    }

    #[test]
    fn a_manifest_lists_each_file_once_however_its_path_is_written() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("img/sub")).unwrap();
        std::fs::write(dir.path().join("img/a.png"), b"a").unwrap();
        std::fs::write(dir.path().join("img/b.png"), b"b").unwrap();
        let absolute = dir.path().join("img/a.png");
        let mut lines = format!(
            "path,concept\nimg/a.png,x\n./img/a.png,x\n{},x\nimg/sub/../a.png,y\nimg/b.png,y\n",
            absolute.display()
        );
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("../a.png", dir.path().join("img/sub/link.png")).unwrap();
            std::fs::hard_link(
                dir.path().join("img/b.png"),
                dir.path().join("img/hard.png"),
            )
            .unwrap();
            lines.push_str("img/sub/link.png,x\nimg/hard.png,y\n");
        }
        let csv = dir.path().join("m.csv");
        std::fs::write(&csv, lines).unwrap();
        let data = Dataset::from_manifest(&csv).unwrap();
        // Two files: every other line names one of them again, merged into
        // its first listing with its concepts.
        assert_eq!(data.samples.len(), 2, "{:?}", data.samples);
        assert_eq!(data.samples[0].path, dir.path().join("img/a.png"));
        assert_eq!(data.samples[0].concepts, [0, 1]);
        assert_eq!(data.samples[1].concepts, [1]);
        let again = if cfg!(unix) { 5 } else { 3 };
        assert_eq!(data.duplicates.len(), again, "{:?}", data.duplicates);
        assert_eq!(data.duplicates[0].1, ListedAt::Line(2));
        // A path that leads nowhere yet is still one image however written.
        std::fs::write(&csv, "path,concept\nnew/c.png,x\nnew/./c.png,y\n").unwrap();
        let data = Dataset::from_manifest(&csv).unwrap();
        assert_eq!(data.samples.len(), 1);
    }

    #[test]
    fn manifests_in_csv_and_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("m.csv");
        std::fs::write(
            &csv,
            "path,concepts\nimg/1.jpg,cat\nimg/2.jpg, cat ; dog\n\n# note\nimg/3.jpg,bird\n",
        )
        .unwrap();
        let data = Dataset::from_manifest(&csv).unwrap();
        assert_eq!(data.concepts, ["cat", "dog", "bird"]);
        assert_eq!(data.samples[1].concepts, [0, 1]);
        assert_eq!(data.samples[0].path, dir.path().join("img/1.jpg"));
        assert!(data.is_multi_label());

        let jsonl = dir.path().join("m.jsonl");
        std::fs::write(&jsonl, "{\"path\": \"a.png\", \"concepts\": [\"x\"]}\n{\"image\": \"b.png\", \"concept\": \"y\"}\n").unwrap();
        let data = Dataset::from_manifest(&jsonl).unwrap();
        assert_eq!(data.concepts, ["x", "y"]);
        assert!(!data.is_multi_label());

        std::fs::write(
            &jsonl,
            "{\"path\": \"a.png\", \"concepts\": [\"x\"]}\n{\"path\": 3}\n",
        )
        .unwrap();
        let e = Dataset::from_manifest(&jsonl).unwrap_err().to_string();
        assert!(e.ends_with("m.jsonl:2: no \"path\" string"), "{e}");
        std::fs::write(&csv, "a.jpg\n").unwrap();
        let e = Dataset::from_manifest(&csv).unwrap_err().to_string();
        assert!(
            e.contains("m.csv:1: 1 field(s); expected `path,concept`"),
            "{e}"
        );
        std::fs::write(&csv, "path,concepts\n").unwrap();
        let e = Dataset::from_manifest(&csv).unwrap_err().to_string();
        assert!(e.contains("m.csv` lists no images"), "{e}");
    }

    #[test]
    fn splits_are_stratified_deterministic_and_follow_the_plan() {
        // Concepts of 100, 40, 17, 2 and 1 images, interleaved.
        let sizes = [100usize, 40, 17, 2, 1];
        let mut strata = Vec::new();
        for round in 0..100 {
            for (c, &n) in sizes.iter().enumerate() {
                if round < n {
                    strata.push(c);
                }
            }
        }
        let (train, eval) = split(&strata, 0.2, 7);
        // Each concept holds out its own share: 20, 8, 3 (of 17), one of
        // two, none of one.
        let held: Vec<usize> = (0..sizes.len())
            .map(|c| eval.iter().filter(|&&i| strata[i] == c).count())
            .collect();
        assert_eq!(held, [20, 8, 3, 1, 0]);
        let sizes64: Vec<u64> = sizes.iter().map(|&n| n as u64).collect();
        assert_eq!(
            crate::plan::stratified_counts(&sizes64, 0.2),
            (train.len() as u64, eval.len() as u64)
        );
        assert_eq!(split(&strata, 0.2, 7), (train.clone(), eval.clone()));
        assert_ne!(split(&strata, 0.2, 8).1, eval);
        let mut all: Vec<usize> = train.iter().chain(&eval).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..strata.len()).collect::<Vec<_>>());
        // One stratum: the old unstratified counts.
        let (train, eval) = split(&[0; 160], 0.2, 7);
        assert_eq!((train.len(), eval.len()), (128, 32));
    }
}
