//! Thin wrappers over `std::fs` that name the path in every error (style.md "Artifact store": all
//! file access goes through one module). `std::io::Error` alone says "No such file or directory"
//! without saying which; these add "failed to read `path`" as anyhow context, and keep the
//! `io::Error` in the chain so callers can still inspect its kind.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;
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
/// One file's checksum in the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSum {
    pub sha256: String,
    pub bytes: u64,
}

/// SHA-256 and size of a file, streamed (artifacts can be hundreds of MB).
pub fn checksum_file(path: &Path) -> Result<FileSum> {
    let mut file = open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf).with_context(|| format!("failed to read `{}`", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok(FileSum { sha256: hex::encode(hasher.finalize()), bytes })
}

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

/// A file or folder name as text, losslessly: valid UTF-8 stays as it is, except that `\` becomes
/// `\\`, and every byte that is not part of valid UTF-8 becomes `\xHH`. The mapping is injective,
/// so names that differ in any byte stay different (two files whose names differ only in an
/// invalid byte are two files, not one), and a folder and an archive holding the same byte names
/// give the same text. Names are compared and sorted in this form.
pub fn name_from_bytes(raw: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(raw.len());
    for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            write!(out, "\\x{b:02X}").expect("writing to a String cannot fail");
        }
    }
    out
}

/// A path's last component in the form of [`name_from_bytes`].
pub fn file_name_text(path: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    path.file_name().map(|n| name_from_bytes(n.as_bytes()))
}

/// Every regular file below `root`, as (path relative to `root` with `/` separators, full path),
/// sorted by relative path. See [`walk_tree_skipping`] for links and names.
pub fn walk_files(root: &Path) -> Result<Vec<(String, PathBuf)>> {
    Ok(walk_tree_skipping(root, &|_| false)?.0)
}

/// Like [`walk_files`], also returning every folder below `root` (relative names), so callers
/// can notice empty folders.
pub fn walk_tree(root: &Path) -> Result<(Vec<(String, PathBuf)>, Vec<String>)> {
    walk_tree_skipping(root, &|_| false)
}

/// Files and folders below `root` (relative names, sorted), leaving out every entry whose relative
/// name `skip` accepts (and everything below it).
///
/// * Names are [`name_from_bytes`] of the raw bytes, so no two entries collapse into one.
/// * Symbolic links are followed, to files and to folders, as torchvision's `ImageFolder` does; a
///   linked folder's contents appear under the link's name.
/// * A dangling link is an error naming it and its target; so is a link to a folder that contains
///   the link (a cycle), which would otherwise be walked forever.
pub fn walk_tree_skipping(root: &Path, skip: &dyn Fn(&str) -> bool) -> Result<(Vec<(String, PathBuf)>, Vec<String>)> {
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    let top = fs::canonicalize(root).with_context(|| format!("failed to resolve `{}`", root.display()))?;
    walk(root, "", skip, &mut files, &mut dirs, &mut vec![top])?;
    files.sort();
    dirs.sort();
    Ok((files, dirs))
}

fn walk(
    dir: &Path,
    rel: &str,
    skip: &dyn Fn(&str) -> bool,
    files: &mut Vec<(String, PathBuf)>,
    dirs: &mut Vec<String>,
    ancestors: &mut Vec<PathBuf>,
) -> Result<()> {
    for path in read_dir_sorted(dir)? {
        let name = file_name_text(&path).expect("read_dir entries always have a file name");
        let child_rel = if rel.is_empty() { name } else { format!("{rel}/{name}") };
        if skip(&child_rel) {
            continue;
        }
        let link = fs::symlink_metadata(&path)
            .with_context(|| format!("failed to read metadata of `{}`", path.display()))?
            .file_type()
            .is_symlink();
        // `metadata` follows links; a link whose target is missing fails here.
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if link && e.kind() == std::io::ErrorKind::NotFound => {
                let target = fs::read_link(&path).map(|t| t.display().to_string()).unwrap_or_else(|_| "?".into());
                anyhow::bail!(
                    "`{}` is a symbolic link to `{target}`, which does not exist; restore its target or remove the link",
                    path.display()
                );
            }
            Err(e) => return Err(e).with_context(|| format!("failed to read metadata of `{}`", path.display())),
        };
        if meta.is_dir() {
            let real = fs::canonicalize(&path).with_context(|| format!("failed to resolve `{}`", path.display()))?;
            if ancestors.contains(&real) {
                anyhow::bail!(
                    "`{}` is a symbolic link to `{}`, a folder that contains the link (a cycle); remove the link",
                    path.display(),
                    real.display()
                );
            }
            dirs.push(child_rel.clone());
            ancestors.push(real);
            walk(&path, &child_rel, skip, files, dirs, ancestors)?;
            ancestors.pop();
        } else if meta.is_file() {
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

    #[test]
    fn byte_names_stay_distinct_and_readable() {
        assert_eq!(name_from_bytes(b"plain.png"), "plain.png");
        assert_eq!(name_from_bytes("é.png".as_bytes()), "é.png");
        assert_eq!(name_from_bytes(b"img\xfe.png"), "img\\xFE.png");
        assert_ne!(name_from_bytes(b"img\xfe.png"), name_from_bytes(b"img\xff.png"));
        // A literal backslash cannot imitate an escaped byte.
        assert_eq!(name_from_bytes(b"img\\xFE.png"), "img\\\\xFE.png");
        assert_ne!(name_from_bytes(b"img\\xFE.png"), name_from_bytes(b"img\xfe.png"));
    }

    #[test]
    fn links_to_folders_are_followed_and_bad_links_named() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        create_dir_all(&root.join("real/sub")).unwrap();
        write(&root.join("real/sub/1.txt"), "x").unwrap();
        create_dir_all(&root.join("top")).unwrap();
        symlink("../real", root.join("top/linked")).unwrap();
        let (files, dirs) = walk_tree(&root.join("top")).unwrap();
        let names: Vec<&str> = files.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(names, ["linked/sub/1.txt"]);
        assert_eq!(dirs, ["linked", "linked/sub"]);

        symlink("..", root.join("real/sub/up")).unwrap();
        let msg = format!("{:#}", walk_tree(&root.join("top")).unwrap_err());
        assert!(msg.contains("top/linked/sub/up") && msg.contains("cycle"), "{msg}");
        std::fs::remove_file(root.join("real/sub/up")).unwrap();

        symlink("missing", root.join("top/dangling")).unwrap();
        let msg = format!("{:#}", walk_tree(&root.join("top")).unwrap_err());
        assert!(msg.contains("top/dangling") && msg.contains("`missing`, which does not exist"), "{msg}");
        // A skipped name is not looked at.
        assert!(walk_tree_skipping(&root.join("top"), &|n| n == "dangling").is_ok());
    }
}
