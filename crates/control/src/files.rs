//! The server's file helpers: weft-api's atomic writes, with errors that name the file.

use std::path::Path;

use crate::ControlError;

/// Writes `contents` to `path` atomically with permission bits `mode`, creating the directory.
pub(crate) fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), ControlError> {
    weft_api::files::write_atomic(path, contents, mode)
        .map(|_| ())
        .map_err(|e| file_error(path, &e))
}

/// Reads a text file, `None` when it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, ControlError> {
    weft_api::files::read_optional(path).map_err(|e| file_error(path, &e))
}

fn file_error(path: &Path, e: &std::io::Error) -> ControlError {
    ControlError::File {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}
