//! Writing small state files atomically and durably, for the agent's and the server's data
//! dirs: a temporary file in the same directory, fsynced, then renamed over the target, and the
//! directory fsynced after the rename (and after creating it), so a reader never sees half a
//! file and a crash never loses a file that was reported written.

use std::io::Write;
use std::path::Path;

/// Writes `contents` to `path` atomically with permission bits `mode`, creating the directory.
/// Does nothing and returns `false` when the file already holds exactly `contents` with `mode`.
///
/// When it returns, the file and its directory entry are on disk: the rename is fsynced through
/// the directory, and so is every directory it created.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<bool> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};

    let same_mode = std::fs::metadata(path).is_ok_and(|m| m.mode() & 0o7777 == mode);
    if same_mode && std::fs::read(path).is_ok_and(|old| old == contents) {
        return Ok(false);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    create_dir_durably(dir)?;
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
        std::fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| true)
}

/// Creates `dir` and its missing parents, fsyncing each parent after a directory was made in
/// it, so the new directories survive a crash.
fn create_dir_durably(dir: &Path) -> std::io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent().unwrap_or(Path::new("/"));
    create_dir_durably(parent)?;
    match std::fs::create_dir(dir) {
        Ok(()) => sync_dir(if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        }),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Fsyncs a directory, making the entries renamed or created in it durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::fs::File::open(dir)?.sync_all()
}

/// Reads a text file, `None` when it does not exist.
pub fn read_optional(path: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
