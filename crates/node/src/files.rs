//! Writing the agent's files atomically: a temporary file in the same directory, fsynced, then
//! renamed over the target, so a reader never sees half a file.

use std::io::Write;
use std::path::Path;

use crate::NodeError;

/// Writes `contents` to `path` atomically with permission bits `mode`, creating the directory.
/// Does nothing (and returns `false`) when the file already holds exactly `contents`.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<bool, NodeError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

    let io = |e: std::io::Error| NodeError::File {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    if std::fs::read(path).is_ok_and(|old| old == contents) {
        return Ok(false);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
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
    result.map_err(io)?;
    Ok(true)
}

/// Reads a small text file, `None` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<String>, NodeError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(NodeError::File {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
    }
}
