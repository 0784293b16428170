//! The agent's file helpers: weft-api's atomic writes, with errors that name the file.

use std::path::Path;

use crate::NodeError;

/// Writes `contents` to `path` atomically with permission bits `mode`, creating the directory.
/// Does nothing (and returns `false`) when the file already holds exactly `contents`.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<bool, NodeError> {
    weft_api::files::write_atomic(path, contents, mode).map_err(|e| file_error(path, &e))
}

/// Reads a small text file, `None` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<String>, NodeError> {
    weft_api::files::read_optional(path).map_err(|e| file_error(path, &e))
}

fn file_error(path: &Path, e: &std::io::Error) -> NodeError {
    NodeError::File {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}
