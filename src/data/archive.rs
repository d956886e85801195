//! Sources as file trees: a folder, a `.tar.gz`/`.tgz`/`.tar`, or a `.zip`, read into memory as
//! `/`-separated relative names. Readers (CIFAR, image folders, Tiny ImageNet) work on a [`Tree`]
//! and never care which container it came from. Whole files are held in memory: the largest
//! supported source (Tiny ImageNet, ~250 MB of JPEGs once the unused `test/` split is filtered out)
//! fits comfortably.
//!
//! Sources as people have them:
//! * **Names are bytes.** Every name is [`fsx::name_from_bytes`] of its raw bytes, in folders and
//!   archives alike, so names that are not UTF-8 are neither merged nor dropped, and a folder and
//!   its archive read the same.
//! * **Links are followed**, as torchvision's `ImageFolder` (which walks with `followlinks=True`)
//!   does: in a folder through the file system, in a tar or zip archive by resolving symbolic and
//!   hard link entries against the archive's own entries. A linked folder's files appear under the
//!   link's name. A link whose target is missing (or outside the archive) and a link cycle are
//!   errors naming the link.
//! * **Windows separators.** Archives written by Windows tools may store `\` between path
//!   components; in zip and tar entries it is read as `/`, as unzip and 7-Zip do.

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

/// An archive entry's raw name or link target as text: `\` read as `/` (module doc), then
/// [`fsx::name_from_bytes`].
fn archive_text(raw: &[u8]) -> String {
    let slashed: Vec<u8> = raw.iter().map(|&b| if b == b'\\' { b'/' } else { b }).collect();
    fsx::name_from_bytes(&slashed)
}

/// An archive entry's raw name as a tree name: [`archive_text`], then [`normalise`].
fn archive_name(raw: &[u8]) -> Option<String> {
    normalise(&archive_text(raw))
}

/// A link entry of an archive, waiting to be resolved once every entry has been read.
struct ArchiveLink {
    name: String,
    /// The target as stored, for messages.
    stored: String,
    /// The target as a tree name; `None` when it leaves the archive (absolute, or `..` past the
    /// top).
    target: Option<String>,
}

impl ArchiveLink {
    /// `raw_target` of a symbolic link is relative to the link's folder; of a hard link, to the
    /// archive's top.
    fn new(name: String, raw_target: &[u8], symbolic: bool) -> ArchiveLink {
        let stored = archive_text(raw_target);
        let base = match (symbolic, name.rsplit_once('/')) {
            (true, Some((parent, _))) => parent.to_string(),
            _ => String::new(),
        };
        let target = if stored.starts_with('/') { None } else { join_lexically(&base, &stored) };
        ArchiveLink { name, stored, target }
    }
}

/// `base/rel` with `.` and `..` resolved by name; `None` when `..` climbs above the top.
fn join_lexically(base: &str, rel: &str) -> Option<String> {
    let mut parts: Vec<&str> = base.split('/').filter(|c| !c.is_empty()).collect();
    for c in rel.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.join("/"))
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

    /// Gives every link the contents of its target (module doc): a file link a copy of the file, a
    /// folder link copies of every file and folder below the target, under the link's name. Links
    /// whose target lies below another pending link wait for it; `seen` holds every file name of
    /// the archive, also those `want` left out (a link to one of those is no error).
    fn resolve_links(&mut self, mut pending: Vec<ArchiveLink>, seen: &BTreeSet<String>, want: &dyn Fn(&str) -> bool) -> Result<()> {
        let below = |a: &str, b: &str| a == b || a.strip_prefix(b).is_some_and(|r| r.starts_with('/'));
        while !pending.is_empty() {
            let mut waiting = Vec::new();
            let mut progressed = false;
            for (i, link) in pending.iter().enumerate() {
                let Some(target) = &link.target else {
                    bail!(
                        "`{}` is a link to `{}`, which is outside the archive; replace the link by the files it points to",
                        self.describe(&link.name),
                        link.stored
                    );
                };
                let blocked = pending
                    .iter()
                    .enumerate()
                    .any(|(j, other)| (i != j || below(&link.name, target)) && (below(target, &other.name) || below(&other.name, target)));
                if blocked {
                    waiting.push(i);
                    continue;
                }
                if let Some(data) = self.files.get(target) {
                    if want(&link.name) {
                        let data = data.clone();
                        self.add_file(link.name.clone(), data);
                    }
                } else if self.dirs.contains(target) {
                    let prefix = format!("{target}/");
                    let files: Vec<(String, Vec<u8>)> = self
                        .files
                        .range(prefix.clone()..)
                        .take_while(|(k, _)| k.starts_with(&prefix))
                        .map(|(k, v)| (format!("{}/{}", link.name, &k[prefix.len()..]), v.clone()))
                        .collect();
                    let dirs: Vec<String> = self
                        .dirs
                        .range(prefix.clone()..)
                        .take_while(|k| k.starts_with(&prefix))
                        .map(|k| format!("{}/{}", link.name, &k[prefix.len()..]))
                        .collect();
                    self.add_dir_with_parents(&link.name);
                    for d in dirs {
                        self.add_dir_with_parents(&d);
                    }
                    for (name, data) in files {
                        self.add_file(name, data);
                    }
                } else if !seen.contains(target) {
                    bail!(
                        "`{}` is a link to `{}`, which is not in the archive; add its target or remove the link",
                        self.describe(&link.name),
                        link.stored
                    );
                }
                progressed = true;
            }
            if !progressed {
                let link = &pending[waiting[0]];
                bail!(
                    "`{}` is a link to `{}`, and links through it lead back to it (a cycle); remove the link",
                    self.describe(&link.name),
                    link.stored
                );
            }
            pending = pending.into_iter().enumerate().filter(|(i, _)| waiting.contains(i)).map(|(_, l)| l).collect();
        }
        Ok(())
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
            let (files, dirs) = fsx::walk_tree_skipping(path, &is_junk)?;
            for d in dirs {
                tree.add_dir_with_parents(&d);
            }
            for (rel, full) in files {
                if want(&rel) {
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
        Container::Zip => read_zip(path, want, &mut tree)?,
    }
    Ok(tree)
}

fn read_zip(path: &Path, want: &dyn Fn(&str) -> bool, tree: &mut Tree) -> Result<()> {
    let file = fsx::open(path)?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .with_context(|| format!("`{}` is not a readable zip archive", path.display()))?;
    let (mut links, mut seen) = (Vec::new(), BTreeSet::new());
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .with_context(|| format!("`{}`: cannot read zip entry {i}", path.display()))?;
        // Raw bytes that are UTF-8 are read as such (also without the entry's UTF-8 flag, as
        // unzip does on Linux). Other bytes: CP437, the specification's encoding for unflagged
        // names (`name()` decodes it, every byte to its own character); a flagged name that is not
        // UTF-8 (`name()` would replace its bytes by U+FFFD, merging names) keeps its raw bytes.
        let raw: Vec<u8> = match std::str::from_utf8(entry.name_raw()) {
            Ok(_) => entry.name_raw().to_vec(),
            Err(_) if entry.name().contains('\u{FFFD}') => entry.name_raw().to_vec(),
            Err(_) => entry.name().as_bytes().to_vec(),
        };
        let Some(name) = archive_name(&raw) else { continue };
        if is_junk(&name) {
            continue;
        }
        if raw.ends_with(b"/") || raw.ends_with(b"\\") {
            tree.add_dir_with_parents(&name);
            continue;
        }
        let mut data = Vec::new();
        if entry.is_symlink() || want(&name) {
            data.reserve(entry.size() as usize);
            entry
                .read_to_end(&mut data)
                .with_context(|| format!("`{}`: cannot decompress `{name}`", path.display()))?;
        }
        if entry.is_symlink() {
            links.push(ArchiveLink::new(name, &data, true));
        } else {
            seen.insert(name.clone());
            if want(&name) {
                tree.add_file(name, data);
            }
        }
    }
    tree.resolve_links(links, &seen, want)
}

fn read_tar<R: Read>(reader: R, path: &Path, want: &dyn Fn(&str) -> bool, tree: &mut Tree) -> Result<()> {
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .with_context(|| format!("`{}` is not a readable tar archive", path.display()))?;
    let (mut links, mut seen) = (Vec::new(), BTreeSet::new());
    for entry in entries {
        let mut entry = entry.with_context(|| format!("`{}`: corrupt or truncated archive", path.display()))?;
        let Some(name) = archive_name(&entry.path_bytes()) else { continue };
        if is_junk(&name) {
            continue;
        }
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            tree.add_dir_with_parents(&name);
        } else if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .with_context(|| format!("`{}`: link `{name}` has no target", path.display()))?
                .into_owned();
            links.push(ArchiveLink::new(name, &target, kind.is_symlink()));
        } else if kind.is_file() {
            seen.insert(name.clone());
            if want(&name) {
                let mut data = Vec::with_capacity(entry.size() as usize);
                entry
                    .read_to_end(&mut data)
                    .with_context(|| format!("`{}`: corrupt or truncated archive at `{name}`", path.display()))?;
                tree.add_file(name, data);
            }
        }
    }
    tree.resolve_links(links, &seen, want)
}

/// Content checksum of a source, computable without decoding anything (it is part of the
/// `prepare` key, so a cached run costs one read of the source). A file: SHA-256 of its bytes. A
/// folder: SHA-256 over every file's relative name, size and SHA-256, in sorted order — so renaming,
/// adding or editing any file changes it, and the folder's location and timestamps do not.
pub fn source_checksum(path: &Path) -> Result<String> {
    if path.is_dir() {
        let mut hasher = Sha256::new();
        for (rel, full) in fsx::walk_tree_skipping(path, &is_junk)?.0 {
            let sum = crate::fsx::checksum_file(&full)?;
            hasher.update(format!("{rel}\0{}\0{}\n", sum.bytes, sum.sha256).as_bytes());
        }
        Ok(hex::encode(hasher.finalize()))
    } else {
        Ok(crate::fsx::checksum_file(path)?.sha256)
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
