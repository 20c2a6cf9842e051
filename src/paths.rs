//! Paths in JSON. A JSON string is Unicode, and serde refuses a path that is
//! not UTF-8 (an error that `json!` turns into a panic); wfrun writes such a
//! path lossily instead, U+FFFD where its bad bytes were, as its text and CSV
//! output do. `#[serde(serialize_with = "crate::paths::lossy")]` on a field.

use std::path::{Path, PathBuf};

use serde::Serializer;

/// A path as a (lossy) UTF-8 string.
pub fn lossy<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

/// An optional path as a (lossy) UTF-8 string or null.
pub fn lossy_opt<S: Serializer>(path: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    match path {
        Some(p) => lossy(p, s),
        None => s.serialize_none(),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::ffi::OsStrExt;

    #[derive(serde::Serialize)]
    struct Named {
        #[serde(serialize_with = "super::lossy")]
        path: std::path::PathBuf,
    }

    #[test]
    fn a_path_that_is_not_utf8_is_written_lossily() {
        let path = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(b"l\xe9.png"));
        let json = serde_json::to_string(&Named { path }).unwrap();
        assert_eq!(json, "{\"path\":\"l\u{fffd}.png\"}");
    }
}
