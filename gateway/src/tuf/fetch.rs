//! Where metadata bytes come from: the `Fetch` seam, the capped read every implementation uses,
//! and `DirFetch` for a directory (a PATH registry, tests).
//!
//! A cap is enforced while reading, never after buffering: a source that never ends costs at
//! most `max + 1` bytes of memory. Knows nothing of what the bytes mean.

use std::io::Read;
use std::path::PathBuf;

use super::FetchError;

/// Where metadata comes from. `file` is the TUF file name ("2.root.json", "timestamp.json",
/// "7.snapshot.json", ...). An implementation reads at most `max` bytes and fails with
/// `TooLarge` beyond; a missing file is `NotFound` (the root chain ends at the first one).
pub trait Fetch {
    fn fetch(&mut self, file: &str, max: u64) -> Result<Vec<u8>, FetchError>;
}

/// Reads `reader` to its end, refusing it once it passes `max` bytes.
pub fn read_capped(reader: impl Read, file: &str, max: u64) -> Result<Vec<u8>, FetchError> {
    let mut out = Vec::new();
    // One byte past the cap tells "exactly max" from "more".
    reader
        .take(max.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| FetchError::Failed {
            file: file.to_string(),
            detail: e.to_string(),
        })?;
    if out.len() as u64 > max {
        return Err(FetchError::TooLarge {
            file: file.to_string(),
            max,
        });
    }
    Ok(out)
}

/// A directory of metadata files.
#[derive(Debug, Clone)]
pub struct DirFetch {
    dir: PathBuf,
}

impl DirFetch {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DirFetch { dir: dir.into() }
    }
}

impl Fetch for DirFetch {
    fn fetch(&mut self, file: &str, max: u64) -> Result<Vec<u8>, FetchError> {
        // Names are ours ("N.role.json"), but a separator would leave the directory.
        if file.is_empty() || file.contains('/') || file.starts_with('.') {
            return Err(FetchError::Failed {
                file: file.to_string(),
                detail: "not a metadata file name".into(),
            });
        }
        match std::fs::File::open(self.dir.join(file)) {
            Ok(f) => read_capped(f, file, max),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(FetchError::NotFound {
                file: file.to_string(),
            }),
            Err(e) => Err(FetchError::Failed {
                file: file.to_string(),
                detail: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_of_exactly_the_cap_passes_and_one_more_byte_is_refused() {
        assert_eq!(read_capped(&[7u8; 10][..], "f", 10).unwrap().len(), 10);
        assert!(matches!(
            read_capped(&[7u8; 11][..], "f", 10),
            Err(FetchError::TooLarge { max: 10, .. })
        ));
    }

    #[test]
    fn an_endless_reader_is_refused_at_the_cap() {
        assert!(matches!(
            read_capped(std::io::repeat(b'x'), "f", 4096),
            Err(FetchError::TooLarge { max: 4096, .. })
        ));
    }

    #[test]
    fn a_missing_file_is_not_found_and_a_path_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = DirFetch::new(dir.path());
        assert!(matches!(
            f.fetch("2.root.json", 10),
            Err(FetchError::NotFound { .. })
        ));
        assert!(matches!(
            f.fetch("../etc/passwd", 10),
            Err(FetchError::Failed { .. })
        ));
    }
}
