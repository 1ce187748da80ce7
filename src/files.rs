//! Writing files so that a crash or a full disk never leaves half a file behind, and secrets are
//! never readable by others, not even for an instant.
//!
//! Permissions are Unix modes. On Windows there are none to set: a new file takes the access
//! list of its folder, and the folders under a user's profile (where the proxy's folder belongs
//! there) are that user's, SYSTEM's and the administrators' only; the mode arguments are
//! ignored and the "readable by others" checks answer false. See docs/operations.md.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Private keys: owner read/write only.
pub const MODE_SECRET: u32 = 0o600;
/// Certificates and config files.
pub const MODE_PUBLIC: u32 = 0o644;

/// Replaces `path` with `bytes` atomically: a temporary file in the same folder (so the rename
/// cannot cross file systems) is created with `mode`, written, fsynced, then renamed over `path`.
/// On failure `path` is untouched and the temporary file is removed.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = temp_sibling(path);
    let result = (|| {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        options.mode(mode);
        let mut file = options.open(&tmp)?;
        // The mode given to open() is filtered by the umask; set it exactly.
        #[cfg(unix)]
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        #[cfg(not(unix))]
        let _ = mode;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Persist the rename itself; a failure here is not worth failing the write for.
            let _ = fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Folders of secrets: owner only, so nobody else can read a key or swap a certificate.
#[cfg_attr(not(unix), allow(dead_code))]
pub const MODE_PRIVATE_DIR: u32 = 0o700;

/// Creates `dir` (and missing parents) owner-only, exactly: the mode given to mkdir is filtered
/// by the umask, and under `umask 000` the folder would be open to everyone. An existing folder
/// is left as it is (see [`writable_by_others`]).
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(MODE_PRIVATE_DIR);
    builder.create(dir)?;
    #[cfg(unix)]
    fs::set_permissions(dir, fs::Permissions::from_mode(MODE_PRIVATE_DIR))?;
    Ok(())
}

/// The permission bits of `path` (Windows: [`MODE_SECRET`], as nothing wider is set there).
pub fn mode_of(path: &Path) -> io::Result<u32> {
    #[cfg(unix)]
    return fs::metadata(path).map(|m| m.permissions().mode() & 0o777);
    #[cfg(not(unix))]
    return fs::metadata(path).map(|_| MODE_SECRET);
}

/// Whether anyone but the owner may write `path` (false when it cannot be checked).
pub fn writable_by_others(path: &Path) -> bool {
    mode_of(path).is_ok_and(|m| m & 0o022 != 0)
}

/// Whether anyone but the owner may read `path` (false when it cannot be checked).
pub fn readable_by_others(path: &Path) -> bool {
    mode_of(path).is_ok_and(|m| m & 0o077 != 0)
}

fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_with_exact_mode_and_replaces() {
        let dir = std::env::temp_dir().join(format!("trae-files-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k.key");
        write_atomic(&path, b"one", MODE_SECRET).unwrap();
        write_atomic(&path, b"two", MODE_SECRET).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no temp file left");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failed_write_leaves_nothing() {
        let path = Path::new("/nonexistent-dir-trae/x.key");
        assert!(write_atomic(path, b"x", MODE_SECRET).is_err());
        assert!(!path.exists());
    }
}
