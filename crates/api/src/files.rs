//! Writing small state files atomically, for the agent's and the server's data dirs: a
//! temporary file in the same directory, fsynced, then renamed over the target, so a reader (or
//! a crash) never sees half a file.

use std::io::Write;
use std::path::Path;

/// Writes `contents` to `path` atomically with permission bits `mode`, creating the directory.
/// Does nothing and returns `false` when the file already holds exactly `contents` with `mode`.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<bool> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};

    let same_mode = std::fs::metadata(path).is_ok_and(|m| m.mode() & 0o7777 == mode);
    if same_mode && std::fs::read(path).is_ok_and(|old| old == contents) {
        return Ok(false);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| true)
}

/// Reads a text file, `None` when it does not exist.
pub fn read_optional(path: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
