//! The agent's file helpers: weft-api's atomic writes, with errors that name the file, and the
//! CNI conflist's installation.

use std::path::Path;

use weft_fabric::files::CNI_CONFLIST_NAME;

use crate::NodeError;

#[cfg(test)]
mod tests;

/// Installs the CNI conflist as `<cni_conf_dir>/10-weft.conflist`: the `flannel-cni-conf` file
/// byte for byte when one is given (K3s copies it the same way), else `generated()`. Returns
/// whether the file changed.
pub fn install_cni_conflist(
    cni_conf_dir: &Path,
    flannel_cni_conf: Option<&Path>,
    generated: impl FnOnce() -> String,
) -> Result<bool, NodeError> {
    let conflist = match flannel_cni_conf {
        Some(path) => std::fs::read(path).map_err(|e| file_error(path, e))?,
        None => generated().into_bytes(),
    };
    let target = cni_conf_dir.join(CNI_CONFLIST_NAME);
    let changed = write_atomic(&target, &conflist, 0o644)?;
    if changed {
        tracing::info!(path = %target.display(), "wrote the CNI config");
    }
    Ok(changed)
}

/// Writes `contents` to `path` atomically with permission bits `mode`, creating the directory.
/// Does nothing (and returns `false`) when the file already holds exactly `contents`.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<bool, NodeError> {
    weft_api::files::write_atomic(path, contents, mode).map_err(|e| file_error(path, e))
}

/// Reads a small text file, `None` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<String>, NodeError> {
    weft_api::files::read_optional(path).map_err(|e| file_error(path, e))
}

fn file_error(path: &Path, source: std::io::Error) -> NodeError {
    NodeError::File {
        path: path.to_owned(),
        hint: String::new(),
        source,
    }
}
