//! Sources as file trees: a folder, a `.tar.gz`/`.tgz`/`.tar`, or a `.zip`, read into memory as
//! `/`-separated relative names. Readers (CIFAR, image folders, Tiny ImageNet) work on a [`Tree`]
//! and never care which container it came from. Whole files are held in memory: the largest
//! supported source (Tiny ImageNet, ~250 MB of JPEGs once the unused `test/` split is filtered out)
//! fits comfortably.

use crate::fsx;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Files and folders of a source, by relative name (`a/b/c.png`, no leading `./`).
#[derive(Debug, Default)]
pub struct Tree {
    /// What the tree was read from, for messages.
    pub origin: PathBuf,
    pub files: BTreeMap<String, Vec<u8>>,
    /// Every folder, including those only implied by a file's path, so empty folders (explicit
    /// entries in archives, real folders on disk) are visible too.
    pub dirs: BTreeSet<String>,
}

/// The container of a source, from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Container {
    Folder,
    TarGz,
    Tar,
    Zip,
}

pub fn container_of(path: &Path) -> Result<Container> {
    if path.is_dir() {
        return Ok(Container::Folder);
    }
    if !path.exists() {
        bail!("source `{}` does not exist", path.display());
    }
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        Ok(Container::TarGz)
    } else if name.ends_with(".tar") {
        Ok(Container::Tar)
    } else if name.ends_with(".zip") {
        Ok(Container::Zip)
    } else {
        bail!("source `{}` is not a folder, .tar.gz, .tgz, .tar or .zip", path.display())
    }
}

/// Names that are never data: hidden files, macOS resource forks.
fn is_junk(name: &str) -> bool {
    name.split('/').any(|c| c.starts_with('.') || c == "__MACOSX")
}

fn normalise(name: &str) -> Option<String> {
    let trimmed = name.trim_start_matches("./").trim_end_matches('/');
    if trimmed.is_empty() || trimmed == "." {
        return None;
    }
    if trimmed.split('/').any(|c| c == "..") {
        return None;
    }
    Some(trimmed.to_string())
}

impl Tree {
    fn add_dir_with_parents(&mut self, dir: &str) {
        let mut cur = dir;
        loop {
            if cur.is_empty() || !self.dirs.insert(cur.to_string()) {
                break;
            }
            match cur.rfind('/') {
                Some(i) => cur = &cur[..i],
                None => break,
            }
        }
    }

    fn add_file(&mut self, name: String, data: Vec<u8>) {
        if let Some(i) = name.rfind('/') {
            let parent = name[..i].to_string();
            self.add_dir_with_parents(&parent);
        }
        self.files.insert(name, data);
    }

    /// Names of the files whose last component is `base`.
    pub fn find_basename(&self, base: &str) -> Vec<&str> {
        self.files
            .keys()
            .filter(|k| k.rsplit('/').next() == Some(base))
            .map(|k| k.as_str())
            .collect()
    }

    /// Display form of a name inside this tree, for messages: `origin:name` for archives,
    /// `origin/name` for folders.
    pub fn describe(&self, name: &str) -> String {
        if self.origin.is_dir() {
            self.origin.join(name).display().to_string()
        } else {
            format!("{}:{name}", self.origin.display())
        }
    }
}

/// Reads the files of `path` whose relative name passes `want` (folders are always listed).
pub fn read_tree(path: &Path, want: &dyn Fn(&str) -> bool) -> Result<Tree> {
    let mut tree = Tree { origin: path.to_path_buf(), ..Default::default() };
    match container_of(path)? {
        Container::Folder => {
            let (files, dirs) = fsx::walk_tree(path)?;
            for d in dirs {
                if !is_junk(&d) {
                    tree.add_dir_with_parents(&d);
                }
            }
            for (rel, full) in files {
                if !is_junk(&rel) && want(&rel) {
                    let data = fsx::read(&full)?;
                    tree.add_file(rel, data);
                }
            }
        }
        Container::TarGz => {
            let file = fsx::open(path)?;
            let gz = flate2::read::GzDecoder::new(std::io::BufReader::with_capacity(1 << 20, file));
            read_tar(gz, path, want, &mut tree)?;
        }
        Container::Tar => {
            let file = fsx::open(path)?;
            read_tar(std::io::BufReader::with_capacity(1 << 20, file), path, want, &mut tree)?;
        }
        Container::Zip => {
            let file = fsx::open(path)?;
            let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
                .with_context(|| format!("`{}` is not a readable zip archive", path.display()))?;
            for i in 0..zip.len() {
                let mut entry = zip
                    .by_index(i)
                    .with_context(|| format!("`{}`: cannot read zip entry {i}", path.display()))?;
                let Some(name) = normalise(entry.name()) else { continue };
                if is_junk(&name) {
                    continue;
                }
                if entry.is_dir() {
                    tree.add_dir_with_parents(&name);
                } else if want(&name) {
                    let mut data = Vec::with_capacity(entry.size() as usize);
                    entry
                        .read_to_end(&mut data)
                        .with_context(|| format!("`{}`: cannot decompress `{name}`", path.display()))?;
                    tree.add_file(name, data);
                }
            }
        }
    }
    Ok(tree)
}

fn read_tar<R: Read>(reader: R, path: &Path, want: &dyn Fn(&str) -> bool, tree: &mut Tree) -> Result<()> {
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .with_context(|| format!("`{}` is not a readable tar archive", path.display()))?;
    for entry in entries {
        let mut entry = entry.with_context(|| format!("`{}`: corrupt or truncated archive", path.display()))?;
        let raw = entry
            .path()
            .with_context(|| format!("`{}`: entry with an unreadable name", path.display()))?
            .to_string_lossy()
            .into_owned();
        let Some(name) = normalise(&raw) else { continue };
        if is_junk(&name) {
            continue;
        }
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            tree.add_dir_with_parents(&name);
        } else if kind.is_file() && want(&name) {
            let mut data = Vec::with_capacity(entry.size() as usize);
            entry
                .read_to_end(&mut data)
                .with_context(|| format!("`{}`: corrupt or truncated archive at `{name}`", path.display()))?;
            tree.add_file(name, data);
        }
    }
    Ok(())
}

/// Content checksum of a source, computable without decoding anything (it is part of the
/// `prepare` key, so a cached run costs one read of the source). A file: SHA-256 of its bytes. A
/// folder: SHA-256 over every file's relative name, size and SHA-256, in sorted order — so renaming,
/// adding or editing any file changes it, and the folder's location and timestamps do not.
pub fn source_checksum(path: &Path) -> Result<String> {
    if path.is_dir() {
        let mut hasher = Sha256::new();
        for (rel, full) in fsx::walk_files(path)? {
            if is_junk(&rel) {
                continue;
            }
            let sum = crate::pipeline::store::checksum_file(&full)?;
            hasher.update(format!("{rel}\0{}\0{}\n", sum.bytes, sum.sha256).as_bytes());
        }
        Ok(hex::encode(hasher.finalize()))
    } else {
        Ok(crate::pipeline::store::checksum_file(path)?.sha256)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_and_junk_skipped() {
        assert_eq!(normalise("./a/b/").as_deref(), Some("a/b"));
        assert_eq!(normalise("./"), None);
        assert_eq!(normalise("a/../../etc/passwd"), None);
        assert!(is_junk("__MACOSX/a/._b.png"));
        assert!(is_junk("a/.DS_Store"));
        assert!(!is_junk("a/b.png"));
    }

    #[test]
    fn folder_checksum_depends_on_names_and_contents_only() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for d in [a.path(), b.path()] {
            fsx::create_dir_all(&d.join("x")).unwrap();
            fsx::write(&d.join("x/1.bin"), [1u8, 2]).unwrap();
        }
        assert_eq!(source_checksum(a.path()).unwrap(), source_checksum(b.path()).unwrap());
        fsx::write(&b.path().join("x/1.bin"), [1u8, 3]).unwrap();
        assert_ne!(source_checksum(a.path()).unwrap(), source_checksum(b.path()).unwrap());
    }
}
