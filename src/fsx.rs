//! Thin wrappers over `std::fs` that name the path in every error (style.md "Artifact store": all
//! file access goes through one module). `std::io::Error` alone says "No such file or directory"
//! without saying which; these add "failed to read `path`" as anyhow context, and keep the
//! `io::Error` in the chain so callers can still inspect its kind.

use anyhow::{Context, Result};
use std::fs;
use std::path::{Path, PathBuf};

pub fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("failed to read `{}`", path.display()))
}

pub fn read_to_string(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("failed to read `{}`", path.display()))
}

pub fn write(path: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    fs::write(path, contents).with_context(|| format!("failed to write `{}`", path.display()))
}

/// The temporary name a file is written under before it is renamed into place: same folder (so
/// the rename is atomic on POSIX), distinct per process.
fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes `path` atomically: `write` fills a temporary file beside it, which is synced and renamed
/// into place, so a reader (or a run resumed after a kill or power loss) sees either the old file
/// or the complete new one, never a torn one.
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temp_path(path);
    write(&tmp).with_context(|| format!("failed to write `{}`", tmp.display()))?;
    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("failed to sync `{}`", tmp.display()))?;
    rename(&tmp, path)
}

/// [`write_atomic_with`] for bytes.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |tmp| Ok(fs::write(tmp, bytes)?))
}

/// Copies a file, naming both paths on failure.
pub fn copy(from: &Path, to: &Path) -> Result<u64> {
    fs::copy(from, to).with_context(|| format!("failed to copy `{}` to `{}`", from.display(), to.display()))
}

pub fn create_dir_all(path: &Path) -> Result<()> {
    fs::create_dir_all(path).with_context(|| format!("failed to create folder `{}`", path.display()))
}

pub fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).with_context(|| format!("failed to rename `{}` to `{}`", from.display(), to.display()))
}

pub fn remove_dir_all(path: &Path) -> Result<()> {
    fs::remove_dir_all(path).with_context(|| format!("failed to remove folder `{}`", path.display()))
}

pub fn remove_file(path: &Path) -> Result<()> {
    fs::remove_file(path).with_context(|| format!("failed to remove `{}`", path.display()))
}

pub fn metadata(path: &Path) -> Result<fs::Metadata> {
    fs::metadata(path).with_context(|| format!("failed to read metadata of `{}`", path.display()))
}

pub fn open(path: &Path) -> Result<fs::File> {
    fs::File::open(path).with_context(|| format!("failed to open `{}`", path.display()))
}

pub fn create(path: &Path) -> Result<fs::File> {
    fs::File::create(path).with_context(|| format!("failed to create `{}`", path.display()))
}

/// The entries of a folder, sorted by file name so that every caller sees one deterministic order
/// (`read_dir` order depends on the file system).
pub fn read_dir_sorted(path: &Path) -> Result<Vec<PathBuf>> {
    let iter = fs::read_dir(path).with_context(|| format!("failed to list folder `{}`", path.display()))?;
    let mut out = Vec::new();
    for entry in iter {
        let entry = entry.with_context(|| format!("failed to list folder `{}`", path.display()))?;
        out.push(entry.path());
    }
    out.sort();
    Ok(out)
}

/// Every regular file below `root`, as (path relative to `root` with `/` separators, full path),
/// sorted by relative path. Symbolic links are followed for files, not for folders (no cycles).
pub fn walk_files(root: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    walk(root, "", &mut out, &mut Vec::new())?;
    out.sort();
    Ok(out)
}

/// Like [`walk_files`], also returning every folder below `root` (relative names), so callers
/// can notice empty folders.
pub fn walk_tree(root: &Path) -> Result<(Vec<(String, PathBuf)>, Vec<String>)> {
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    walk(root, "", &mut files, &mut dirs)?;
    files.sort();
    dirs.sort();
    Ok((files, dirs))
}

fn walk(dir: &Path, rel: &str, files: &mut Vec<(String, PathBuf)>, dirs: &mut Vec<String>) -> Result<()> {
    for path in read_dir_sorted(dir)? {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .expect("read_dir entries always have a file name");
        let child_rel = if rel.is_empty() { name } else { format!("{rel}/{name}") };
        let ft = fs::symlink_metadata(&path)
            .with_context(|| format!("failed to read metadata of `{}`", path.display()))?
            .file_type();
        if ft.is_dir() {
            dirs.push(child_rel.clone());
            walk(&path, &child_rel, files, dirs)?;
        } else if ft.is_file() || (ft.is_symlink() && path.is_file()) {
            files.push((child_rel, path));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.bin");
        let err = read(&missing).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("nope.bin"), "{msg}");
        // The io::Error stays in the chain for callers that branch on its kind.
        let io = err.downcast_ref::<std::io::Error>().unwrap();
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn walk_lists_files_and_folders_sorted() {
        let dir = tempfile::tempdir().unwrap();
        create_dir_all(&dir.path().join("b/empty")).unwrap();
        create_dir_all(&dir.path().join("a")).unwrap();
        write(&dir.path().join("b/2.txt"), "x").unwrap();
        write(&dir.path().join("a/1.txt"), "y").unwrap();
        let (files, dirs) = walk_tree(dir.path()).unwrap();
        let names: Vec<&str> = files.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(names, ["a/1.txt", "b/2.txt"]);
        assert_eq!(dirs, ["a", "b", "b/empty"]);
    }
}
