//! The artifact store (design §3): every stage output lives in `artifacts/<stage>/<key>/`.
//!
//! # What goes into a key
//!
//! A [`Key`] is the hex SHA-256 of the canonical JSON bytes of
//! `{"config": …, "inputs": [..], "schema_version": N, "stage": "…"}`: object keys sorted, no
//! whitespace, numbers as serde_json prints them. `config` is the stage's *resolved*
//! configuration: everything that changes the result (hyper-parameters, the device kind for
//! `measure`, a content checksum of the dataset) and nothing else — no artifacts root, no absolute
//! path, no timestamp, no host name, so a moved checkout keeps its cache. `inputs` are the keys of
//! the artifacts the stage reads, so a change propagates downstream. The key is a format contract:
//! a test pins one, and changing the layout means bumping the stage's schema version on purpose.
//! std's `DefaultHasher` is never used: its output is not stable across Rust releases.
//!
//! # How an artifact is written
//!
//! [`Store::build`] takes an exclusive `flock` on `artifacts/<stage>/.lock-<key>` (several
//! processes or Slurm tasks on a shared folder never do the work twice), looks again (someone may
//! have finished it meanwhile), runs the builder in `artifacts/<stage>/.tmp-<key>-<pid>/`,
//! checksums every file, writes `manifest.json` **last** (config, input keys, checksums, seconds,
//! lipctl version, status) and renames the folder into place. A failing or panicking builder leaves
//! nothing behind: no temporary folder, no lock file, and no stage folder that the build created
//! and left empty.
//!
//! A lock file is removed by its holder while it still holds the lock. A process that was waiting
//! on the removed file then finds, once it holds the lock, that the path no longer names the file
//! it locked (device and inode differ, or the path is gone) and starts over with a fresh open, so
//! two processes never hold "the" lock at once.
//!
//! # How an artifact is read
//!
//! [`Store::lookup`] verifies every file against the manifest's SHA-256. A damaged or incomplete
//! artifact is reported (a warning on the store's [`Progress`], also kept for
//! [`Store::take_warnings`]) and removed, so it is recomputed and never used.

use crate::fsx::{self, checksum_file, FileSum};
use crate::progress::Progress;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

/// Name of the commit mark inside every artifact folder.
pub const MANIFEST: &str = "manifest.json";
/// Version of the manifest layout itself (not of any stage's output).
pub const MANIFEST_FORMAT: u32 = 1;

/// Content key of an artifact: 64 lowercase hex digits of a SHA-256.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Key(String);

impl Key {
    /// The key of `stage` with `schema_version`, resolved `config` and input keys (module doc).
    pub fn compute(stage: &str, schema_version: u32, config: &Value, inputs: &[Key]) -> Key {
        let record = serde_json::json!({
            "stage": stage,
            "schema_version": schema_version,
            "config": config,
            "inputs": inputs.iter().map(|k| Value::String(k.0.clone())).collect::<Vec<_>>(),
        });
        Key(hex::encode(Sha256::digest(canonical_json(&record).as_bytes())))
    }

    /// Parses a key as written in folder names and manifests.
    pub fn parse(s: &str) -> Result<Key> {
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(Key(s.to_string()))
        } else {
            bail!("`{s}` is not an artifact key (64 lowercase hex digits)")
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, for messages (48 bits: collisions among one study's few thousand
    /// artifacts are negligible, and folders always use the full key).
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// JSON with object keys sorted and no whitespace, independent of serde_json's `preserve_order`
/// feature (another dependency may switch it on, which would make `Map` keep insertion order).
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, val)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(val, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// What a stage tells the store about the artifact it is about to build: exactly the inputs of
/// its key, plus facts recorded for explanation only.
#[derive(Clone, Debug)]
pub struct ManifestInfo {
    pub schema_version: u32,
    /// Resolved configuration (part of the key).
    pub config: Value,
    /// Keys of the artifacts read (part of the key).
    pub inputs: Vec<Key>,
    /// Device the artifact was computed on, when it matters (recorded, not hashed: stages for which
    /// the device kind changes the result put it in `config`).
    pub device: Option<String>,
}

impl ManifestInfo {
    pub fn new(schema_version: u32, config: Value) -> Self {
        ManifestInfo { schema_version, config, inputs: Vec::new(), device: None }
    }

    pub fn key(&self, stage: &str) -> Key {
        Key::compute(stage, self.schema_version, &self.config, &self.inputs)
    }
}

/// `manifest.json`: the commit mark of an artifact, written last.
/// Unknown fields are accepted (not `deny_unknown_fields`): a newer lipctl may record more, and an
/// older one must not take that for damage and delete the artifact.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub stage: String,
    pub key: Key,
    pub schema_version: u32,
    pub config: Value,
    pub inputs: Vec<Key>,
    /// Relative path (`/`-separated) → checksum, for every file except the manifest.
    pub files: BTreeMap<String, FileSum>,
    pub seconds: f64,
    pub lipctl_version: String,
    pub device: Option<String>,
    /// `done` for every artifact the store commits (failed builds leave no artifact).
    pub status: String,
    /// Seconds since the Unix epoch when it was committed (recorded, never hashed).
    pub created_unix: u64,
}

/// A committed, verified artifact.
#[derive(Clone, Debug)]
pub struct Artifact {
    pub stage: String,
    pub key: Key,
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// True when it already existed (lookup, or built by another process while we waited).
    pub cached: bool,
}

impl Artifact {
    /// Path of a file inside the artifact.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// The SHA-256 the manifest records for file `rel` (verified by the lookup), if it has one.
    pub fn file_sha256(&self, rel: &str) -> Option<&str> {
        self.manifest.files.get(rel).map(|f| f.sha256.as_str())
    }
}

/// Counts per stage for `lipctl status` without a pipeline.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StageStatus {
    pub stage: String,
    /// Committed artifacts (not verified here: verification reads every byte).
    pub done: Vec<Key>,
    /// Keys whose lock is held right now: a build is running.
    pub running: Vec<Key>,
    /// Temporary folders left by a build that is not running (killed process): removed by the next
    /// build of that key.
    pub partial: usize,
    /// Scratch folders of resumable stages (e.g. training checkpoints) awaiting their build.
    pub resumable: Vec<Key>,
}

/// Why a committed folder cannot be used.
#[derive(Debug, thiserror::Error)]
enum Damage {
    #[error("manifest.json is missing")]
    NoManifest,
    #[error("manifest.json is unreadable: {0}")]
    BadManifest(String),
    #[error("manifest.json is for {0}, not for this folder")]
    WrongKey(String),
    #[error("file `{0}` is missing")]
    Missing(String),
    #[error("file `{0}` fails its checksum (expected {1}, found {2})")]
    Checksum(String, String, String),
}

/// The store rooted at one folder (by default `artifacts/`).
pub struct Store {
    root: PathBuf,
    progress: Progress,
    warnings: Mutex<Vec<String>>,
}

impl Store {
    /// Opens (creating it if needed) the store at `root`; fails with a message naming the folder
    /// when it cannot be created or written.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let root = root.into();
        // Unique per call, not just per process: two stores opened at once in one process (threads)
        // must not remove each other's probe.
        static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let probe = root.join(format!(".write-probe-{}-{n}", std::process::id()));
        let check = std::fs::create_dir_all(&root)
            .and_then(|_| std::fs::write(&probe, b"ok"))
            .and_then(|_| std::fs::remove_file(&probe));
        if let Err(e) = check {
            bail!(
                "the artifact folder `{}` is not writable ({e}); choose another with --artifacts or LIPCTL_ARTIFACTS",
                root.display()
            );
        }
        Ok(Store { root, progress: Progress::lines(), warnings: Mutex::new(Vec::new()) })
    }

    /// Where warnings (damaged artifacts, waiting for a lock) are shown; plain stderr lines by
    /// default.
    pub fn with_progress(mut self, progress: Progress) -> Store {
        self.progress = progress;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn stage_dir(&self, stage: &str) -> PathBuf {
        self.root.join(stage)
    }

    /// The committed folder of `stage`/`key` (which may not exist).
    pub fn artifact_dir(&self, stage: &str, key: &Key) -> PathBuf {
        self.stage_dir(stage).join(key.as_str())
    }

    /// Persistent scratch folder for a resumable stage (e.g. per-epoch training checkpoints). Not
    /// created here. It survives failures and interruptions and is removed after a successful
    /// [`Store::build`] of the same key. Use it only while inside that key's build (lock held).
    pub fn work_dir(&self, stage: &str, key: &Key) -> PathBuf {
        self.stage_dir(stage).join(format!(".work-{key}"))
    }

    /// Warnings reported so far (also shown on the progress handle), emptied.
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn warn(&self, msg: String) {
        self.progress.println(&format!("warning: {msg}"));
        self.warnings.lock().unwrap_or_else(|p| p.into_inner()).push(msg);
    }

    /// The verified artifact, or `None` when it does not exist. A damaged or incomplete one is
    /// reported, removed and reported as `None`, so the caller recomputes it.
    pub fn lookup(&self, stage: &str, key: &Key) -> Result<Option<Artifact>> {
        let dir = self.artifact_dir(stage, key);
        if !dir.exists() {
            return Ok(None);
        }
        match verify(&dir, stage, key) {
            Ok(manifest) => Ok(Some(Artifact { stage: stage.into(), key: key.clone(), dir, manifest, cached: true })),
            Err(damage) => {
                self.discard(stage, key, &format!("is damaged ({damage})"))?;
                Ok(None)
            }
        }
    }

    /// The committed artifact as its manifest describes it, without reading its files: `None` when
    /// there is none or its manifest is unreadable or names another artifact. Never removes
    /// anything and never warns, so read-only commands (`status`, `run --dry-run`) can use it; a
    /// caller that uses the files goes through [`Store::lookup`], which verifies them.
    pub fn peek(&self, stage: &str, key: &Key) -> Result<Option<Artifact>> {
        let dir = self.artifact_dir(stage, key);
        let Ok(manifest) = read_manifest(&dir, stage, key) else { return Ok(None) };
        Ok(Some(Artifact { stage: stage.into(), key: key.clone(), dir, manifest, cached: true }))
    }

    /// Removes the artifact `stage`/`key` (saying `why` in a warning) so that the next build
    /// recomputes it: moved aside first (atomic), so no reader ever sees a half-deleted folder.
    /// Gone already (another process discarded it first) is not an error.
    pub fn discard(&self, stage: &str, key: &Key, why: &str) -> Result<()> {
        let dir = self.artifact_dir(stage, key);
        self.warn(format!("artifact {stage}/{} {why}; removing it so it is recomputed", key.short()));
        let aside = self.stage_dir(stage).join(format!(".damaged-{key}-{}", std::process::id()));
        if aside.exists() {
            fsx::remove_dir_all(&aside)?;
        }
        if let Err(e) = fsx::rename(&dir, &aside) {
            if dir.exists() {
                return Err(e);
            }
            return Ok(());
        }
        fsx::remove_dir_all(&aside)
    }

    /// [`Store::discard`] under the key's lock, and only if `why` (run while the lock is held)
    /// still gives a reason: a process that found the artifact wanting just before another one
    /// replaced it does not remove the replacement. Nothing there: nothing to do, and no lock
    /// taken. Errors: the lock, `why`, the removal.
    pub fn discard_if(&self, stage: &str, key: &Key, why: impl FnOnce() -> Result<Option<String>>) -> Result<()> {
        if !self.artifact_dir(stage, key).exists() {
            return Ok(());
        }
        let _lock = self.lock(stage, key)?;
        match why()? {
            Some(reason) => self.discard(stage, key, &reason),
            None => Ok(()),
        }
    }

    /// Returns the artifact of `stage`/`key`, building it with `builder` when it is not there.
    /// `builder` receives an empty temporary folder and writes the artifact's files into it (not
    /// `manifest.json`, which the store writes). Runs `builder` at most once across threads and
    /// processes sharing this folder; on error or panic nothing is left behind.
    pub fn build<F>(&self, stage: &str, key: &Key, info: &ManifestInfo, builder: F) -> Result<Artifact>
    where
        F: FnOnce(&Path) -> Result<()>,
    {
        if info.key(stage) != *key {
            bail!("internal error: key {} passed for {stage} does not match its manifest info ({})", key.short(), info.key(stage).short());
        }
        let stage_dir = self.stage_dir(stage);
        // Dropped after the lock (reverse order of declaration), on errors and panics alike.
        let _created_stage = RemoveDirIfEmpty((!stage_dir.is_dir()).then(|| stage_dir.clone()));
        let _lock = self.lock(stage, key)?;
        self.build_locked(stage, key, info, builder)
    }

    /// [`Store::build`] once the key's lock is held.
    fn build_locked<F>(&self, stage: &str, key: &Key, info: &ManifestInfo, builder: F) -> Result<Artifact>
    where
        F: FnOnce(&Path) -> Result<()>,
    {
        let stage_dir = self.stage_dir(stage);
        if let Some(found) = self.lookup(stage, key)? {
            return Ok(found);
        }
        // We hold the lock: every temporary folder of this key is left over from a dead process.
        let tmp_prefix = format!(".tmp-{key}-");
        for path in fsx::read_dir_sorted(&stage_dir)? {
            if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&tmp_prefix)) {
                fsx::remove_dir_all(&path)?;
            }
        }
        let tmp = stage_dir.join(format!("{tmp_prefix}{}", std::process::id()));
        fsx::create_dir_all(&tmp)?;
        let guard = RemoveOnDrop(Some(tmp.clone()));
        let started = Instant::now();
        builder(&tmp).with_context(|| format!("building {stage}/{}", key.short()))?;
        let seconds = started.elapsed().as_secs_f64();

        let mut files = BTreeMap::new();
        for (rel, path) in fsx::walk_files(&tmp)? {
            if rel == MANIFEST {
                bail!("internal error: the {stage} builder wrote {MANIFEST}, which the store reserves");
            }
            files.insert(rel, checksum_file(&path)?);
        }
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            stage: stage.to_string(),
            key: key.clone(),
            schema_version: info.schema_version,
            config: info.config.clone(),
            inputs: info.inputs.clone(),
            files,
            seconds,
            lipctl_version: env!("CARGO_PKG_VERSION").to_string(),
            device: info.device.clone(),
            status: "done".to_string(),
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        let text = serde_json::to_string_pretty(&manifest).context("serialising manifest.json")?;
        fsx::write(&tmp.join(MANIFEST), text)?;
        let dir = self.artifact_dir(stage, key);
        fsx::rename(&tmp, &dir)?;
        std::mem::forget(guard);
        let work = self.work_dir(stage, key);
        if work.exists() {
            fsx::remove_dir_all(&work)?;
        }
        Ok(Artifact { stage: stage.into(), key: key.clone(), dir, manifest, cached: false })
    }

    /// Exclusive lock on `stage`/`key` (creating the stage folder when needed), released and its
    /// file removed when the returned guard is dropped (module doc).
    fn lock(&self, stage: &str, key: &Key) -> Result<KeyLock> {
        use fs4::fs_std::FileExt;
        use std::os::unix::fs::MetadataExt;
        let path = self.stage_dir(stage).join(format!(".lock-{key}"));
        let mut told = false;
        loop {
            fsx::create_dir_all(&self.stage_dir(stage))?;
            let file = match std::fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path) {
                Ok(f) => f,
                // The stage folder was removed (emptied by a failed build) between the two calls.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("failed to open lock file `{}`", path.display())),
            };
            if !FileExt::try_lock_exclusive(&file).with_context(|| format!("failed to lock `{}`", path.display()))? {
                if !told {
                    self.progress
                        .println(&format!("{stage}/{} is being built by another process; waiting for it", key.short()));
                    told = true;
                }
                FileExt::lock_exclusive(&file).with_context(|| format!("failed to lock `{}`", path.display()))?;
            }
            let held = file.metadata().with_context(|| format!("failed to read metadata of `{}`", path.display()))?;
            match std::fs::metadata(&path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => return Ok(KeyLock { file, path }),
                // The previous holder removed the file we waited on: lock the current one.
                _ => continue,
            }
        }
    }

    /// Keys of the committed artifacts of `stage`, sorted (not verified: [`Store::lookup`] does
    /// that when one is used).
    pub fn list(&self, stage: &str) -> Result<Vec<Key>> {
        let dir = self.stage_dir(stage);
        if !dir.is_dir() {
            return Ok(Vec::new());
        }
        let mut keys = Vec::new();
        for path in fsx::read_dir_sorted(&dir)? {
            if let Some(key) = path.file_name().and_then(|n| Key::parse(&n.to_string_lossy()).ok()) {
                if path.join(MANIFEST).is_file() {
                    keys.push(key);
                }
            }
        }
        Ok(keys)
    }

    /// Stage names present in the store, sorted.
    pub fn stages(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for path in fsx::read_dir_sorted(&self.root)? {
            if path.is_dir() {
                if let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) {
                    if !name.starts_with('.') {
                        out.push(name);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Done / running / partial / resumable counts of every stage, for `lipctl status`.
    pub fn status(&self) -> Result<Vec<StageStatus>> {
        let mut out = Vec::new();
        for stage in self.stages()? {
            let mut st = StageStatus { stage: stage.clone(), ..Default::default() };
            let mut tmp_keys = Vec::new();
            for path in fsx::read_dir_sorted(&self.stage_dir(&stage))? {
                let name = match path.file_name() {
                    Some(n) => n.to_string_lossy().into_owned(),
                    None => continue,
                };
                if let Ok(key) = Key::parse(&name) {
                    if path.join(MANIFEST).is_file() {
                        st.done.push(key);
                    }
                } else if let Some(rest) = name.strip_prefix(".lock-") {
                    if let Ok(key) = Key::parse(rest) {
                        if is_locked(&path)? {
                            st.running.push(key);
                        }
                    }
                } else if let Some(rest) = name.strip_prefix(".tmp-") {
                    if let Some(k) = rest.get(..64).and_then(|k| Key::parse(k).ok()) {
                        tmp_keys.push(k);
                    }
                } else if let Some(rest) = name.strip_prefix(".work-") {
                    if let Ok(key) = Key::parse(rest) {
                        st.resumable.push(key);
                    }
                }
            }
            st.partial = tmp_keys.iter().filter(|k| !st.running.contains(k)).count();
            out.push(st);
        }
        Ok(out)
    }
}

/// `lipctl status` without a pipeline: one line per stage.
pub fn print_status(store: &Store, out: &mut dyn std::io::Write) -> Result<()> {
    let stages = store.status()?;
    if stages.is_empty() {
        writeln!(out, "{}: empty", store.root().display())?;
        return Ok(());
    }
    writeln!(out, "{:<12} {:>6} {:>8} {:>8} {:>10}", "stage", "done", "running", "partial", "resumable")?;
    for s in stages {
        writeln!(out, "{:<12} {:>6} {:>8} {:>8} {:>10}", s.stage, s.done.len(), s.running.len(), s.partial, s.resumable.len())?;
    }
    Ok(())
}

/// Whether another open file description holds a lock on `path` (probe with a shared lock).
fn is_locked(path: &Path) -> Result<bool> {
    use fs4::fs_std::FileExt;
    let file = match std::fs::OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        // Removed by its holder since the folder was listed: that build has ended.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("failed to open lock file `{}`", path.display())),
    };
    let got = FileExt::try_lock_shared(&file).with_context(|| format!("failed to probe lock `{}`", path.display()))?;
    Ok(!got)
}

/// A held key lock: on drop, the lock file is removed while still locked, then unlocked (module
/// doc), on error returns and panics alike.
struct KeyLock {
    file: std::fs::File,
    path: PathBuf,
}

impl Drop for KeyLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = fs4::fs_std::FileExt::unlock(&self.file);
    }
}

/// Removes a folder this build created if it is still empty when dropped (a failed build's stage
/// folder; `remove_dir` refuses a folder that holds anything, such as another process's lock).
struct RemoveDirIfEmpty(Option<PathBuf>);

impl Drop for RemoveDirIfEmpty {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_dir(&p);
        }
    }
}

/// Removes a temporary folder unless forgotten: runs on error returns and on panics alike.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_dir_all(&p);
        }
    }
}

/// The manifest of the artifact folder `dir`, checked to name `stage`/`key`; its files unread
/// (shared by [`verify`] and [`Store::peek`]).
fn read_manifest(dir: &Path, stage: &str, key: &Key) -> std::result::Result<Manifest, Damage> {
    let path = dir.join(MANIFEST);
    if !path.is_file() {
        return Err(Damage::NoManifest);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Damage::BadManifest(e.to_string()))?;
    let manifest: Manifest = serde_json::from_str(&text).map_err(|e| Damage::BadManifest(e.to_string()))?;
    if manifest.key != *key || manifest.stage != stage {
        return Err(Damage::WrongKey(format!("{}/{}", manifest.stage, manifest.key.short())));
    }
    Ok(manifest)
}

fn verify(dir: &Path, stage: &str, key: &Key) -> std::result::Result<Manifest, Damage> {
    let manifest = read_manifest(dir, stage, key)?;
    for (rel, want) in &manifest.files {
        let file = dir.join(rel);
        if !file.is_file() {
            return Err(Damage::Missing(rel.clone()));
        }
        let got = checksum_file(&file).map_err(|_| Damage::Missing(rel.clone()))?;
        if got != *want {
            return Err(Damage::Checksum(rel.clone(), want.sha256[..12].to_string(), got.sha256[..12].to_string()));
        }
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn info(lr: f64) -> ManifestInfo {
        ManifestInfo::new(1, serde_json::json!({"lr": lr, "method": "AOL"}))
    }

    fn store(dir: &Path) -> Store {
        Store::open(dir.join("artifacts")).unwrap().with_progress(Progress::hidden())
    }

    #[test]
    fn key_is_pinned() {
        // Format contract (module doc). The expected value is the SHA-256 of the canonical bytes
        // below, computed independently with
        //   printf '%s' '{"config":{"a":[1,2.5,"x"],"b":{"c":true,"d":null}},"inputs":["00…00"],"schema_version":3,"stage":"train"}' | sha256sum
        let input = Key(format!("{:064}", 0));
        let config = serde_json::json!({"b": {"d": null, "c": true}, "a": [1, 2.5, "x"]});
        let canonical = canonical_json(&serde_json::json!({
            "stage": "train", "schema_version": 3, "config": config.clone(), "inputs": [input.as_str()]
        }));
        assert_eq!(
            canonical,
            format!(r#"{{"config":{{"a":[1,2.5,"x"],"b":{{"c":true,"d":null}}}},"inputs":["{}"],"schema_version":3,"stage":"train"}}"#, "0".repeat(64))
        );
        let key = Key::compute("train", 3, &config, &[input]);
        assert_eq!(key.as_str(), PINNED_KEY);
    }
    const PINNED_KEY: &str = "fa2b589d6b3fbe257116ee0cb49e1b721da6dec95c1a56aba105b61bd705414d";

    #[test]
    fn key_changes_with_every_part() {
        let base = Key::compute("s", 1, &serde_json::json!({"x": 1}), &[]);
        assert_ne!(base, Key::compute("t", 1, &serde_json::json!({"x": 1}), &[]));
        assert_ne!(base, Key::compute("s", 2, &serde_json::json!({"x": 1}), &[]));
        assert_ne!(base, Key::compute("s", 1, &serde_json::json!({"x": 2}), &[]));
        assert_ne!(base, Key::compute("s", 1, &serde_json::json!({"x": 1}), &[base.clone()]));
    }

    /// `discard_if` asks its question while holding the key's lock (so a concurrent rebuild cannot
    /// slip between the check and the removal), removes only on a reason, and takes no lock and
    /// asks nothing when there is no artifact.
    #[test]
    fn discard_if_decides_under_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let info = info(0.3);
        let key = info.key("certify");
        store.build("certify", &key, &info, |tmp| fsx::write(&tmp.join("c.json"), "{}")).unwrap();
        let lock_file = store.stage_dir("certify").join(format!(".lock-{key}"));
        let held = || is_locked(&lock_file).unwrap();
        store.discard_if("certify", &key, || Ok((!held()).then(|| "asked without the lock".to_string()))).unwrap();
        assert!(store.lookup("certify", &key).unwrap().is_some(), "kept: nothing wrong with it");
        store.discard_if("certify", &key, || Ok(held().then(|| "stale".to_string()))).unwrap();
        assert!(store.lookup("certify", &key).unwrap().is_none(), "removed under the lock");
        assert!(!lock_file.exists(), "the lock file outlived its guard");
        store.discard_if("certify", &key, || panic!("asked about a missing artifact")).unwrap();
    }

    #[test]
    fn build_then_cache_hit() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let info = info(0.1);
        let key = info.key("search");
        assert!(store.lookup("search", &key).unwrap().is_none());
        let runs = AtomicUsize::new(0);
        let build = || {
            store
                .build("search", &key, &info, |tmp| {
                    runs.fetch_add(1, Ordering::SeqCst);
                    fsx::create_dir_all(&tmp.join("sub"))?;
                    fsx::write(&tmp.join("sub/a.txt"), "hello")
                })
                .unwrap()
        };
        let first = build();
        assert!(!first.cached);
        let second = build();
        assert!(second.cached);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(std::fs::read_to_string(second.path("sub/a.txt")).unwrap(), "hello");
        // SHA-256("hello"), from `printf hello | sha256sum`.
        assert_eq!(
            second.manifest.files["sub/a.txt"].sha256,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(second.manifest.config, info.config);
        assert_eq!(store.list("search").unwrap(), vec![key.clone()]);
        assert!(store.list("train").unwrap().is_empty());
        let status = store.status().unwrap();
        assert_eq!(status.len(), 1);
        assert_eq!(status[0].done, vec![key]);
        assert_eq!(status[0].partial, 0);
        assert!(status[0].running.is_empty());
    }

    #[test]
    fn corrupted_file_is_detected_and_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let info = info(0.2);
        let key = info.key("train");
        let art = store.build("train", &key, &info, |tmp| fsx::write(&tmp.join("w.bin"), [1u8, 2, 3])).unwrap();
        fsx::write(&art.path("w.bin"), [1u8, 2, 4]).unwrap();
        // `peek` reads the manifest only: it neither notices the damage nor removes anything.
        let peeked = store.peek("train", &key).unwrap().expect("peek finds the committed artifact");
        assert_eq!(peeked.manifest.files.len(), 1);
        assert!(store.take_warnings().is_empty() && art.dir.exists());
        assert!(store.lookup("train", &key).unwrap().is_none());
        let warnings = store.take_warnings();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("checksum"), "{warnings:?}");
        assert!(!art.dir.exists(), "damaged artifact must be removed");
        let rebuilt = store.build("train", &key, &info, |tmp| fsx::write(&tmp.join("w.bin"), [1u8, 2, 3])).unwrap();
        assert!(!rebuilt.cached);
        assert_eq!(std::fs::read(rebuilt.path("w.bin")).unwrap(), [1, 2, 3]);
    }

    #[test]
    fn missing_file_or_manifest_is_incomplete() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let info = info(0.3);
        let key = info.key("train");
        let art = store.build("train", &key, &info, |tmp| fsx::write(&tmp.join("w.bin"), [7u8])).unwrap();
        fsx::remove_file(&art.path("w.bin")).unwrap();
        assert!(store.lookup("train", &key).unwrap().is_none());
        assert!(store.take_warnings()[0].contains("missing"));
        // A folder without manifest (e.g. copied by hand) is not an artifact either.
        fsx::create_dir_all(&art.dir).unwrap();
        fsx::write(&art.path("w.bin"), [7u8]).unwrap();
        assert!(store.lookup("train", &key).unwrap().is_none());
        assert!(store.take_warnings()[0].contains("manifest.json is missing"));
    }

    #[test]
    fn failing_or_panicking_builder_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let info = info(0.4);
        let key = info.key("train");
        let err = store
            .build("train", &key, &info, |tmp| {
                fsx::write(&tmp.join("half.bin"), [0u8; 10])?;
                bail!("disk full (simulated)")
            })
            .unwrap_err();
        assert!(format!("{err:#}").contains("disk full"));
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = store.build("train", &key, &info, |tmp| {
                fsx::write(&tmp.join("half.bin"), [0u8; 10])?;
                panic!("bug (simulated)")
            });
        }));
        assert!(panicked.is_err());
        // Nothing remains: no temporary folder, no lock file, not even the stage folder.
        assert!(!store.stage_dir("train").exists(), "{:?}", fsx::read_dir_sorted(&store.stage_dir("train")));
        assert!(store.lookup("train", &key).unwrap().is_none());
    }

    #[test]
    fn manifest_is_written_last() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let info = info(0.5);
        let key = info.key("train");
        let art = store
            .build("train", &key, &info, |tmp| {
                // While the builder runs, there is no manifest and no committed folder.
                assert!(!tmp.join(MANIFEST).exists());
                assert!(!store.artifact_dir("train", &key).exists());
                fsx::write(&tmp.join("x"), "1")
            })
            .unwrap();
        let manifest_time = std::fs::metadata(art.path(MANIFEST)).unwrap().modified().unwrap();
        let file_time = std::fs::metadata(art.path("x")).unwrap().modified().unwrap();
        assert!(manifest_time >= file_time);
        assert_eq!(art.manifest.status, "done");
        assert_eq!(art.manifest.lipctl_version, env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn status_shows_a_running_build_and_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let first = info(0.9);
        let key = first.key("measure");
        store
            .build("measure", &key, &first, |_| {
                let st = &store.status().unwrap()[0];
                assert_eq!(st.running, vec![key.clone()]);
                assert_eq!(st.partial, 0, "the running build's temporary folder is not a leftover");
                Ok(())
            })
            .unwrap();
        // A temporary folder of a dead process is partial, and the next build of that key clears it.
        let other = info(1.0);
        let other_key = other.key("measure");
        let stale = store.stage_dir("measure").join(format!(".tmp-{other_key}-999999"));
        fsx::create_dir_all(&stale).unwrap();
        let st = &store.status().unwrap()[0];
        assert_eq!((st.done.len(), st.running.len(), st.partial), (1, 0, 1));
        store.build("measure", &other_key, &other, |_| Ok(())).unwrap();
        assert!(!stale.exists());
        let mut text = Vec::new();
        print_status(&store, &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.lines().nth(1).unwrap().split_whitespace().eq(["measure", "2", "0", "0", "0"]), "{text}");
    }

    #[test]
    fn work_dir_survives_failure_and_goes_after_success() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let info = info(0.6);
        let key = info.key("train");
        let work = store.work_dir("train", &key);
        let _ = store.build("train", &key, &info, |_| {
            fsx::create_dir_all(&work)?;
            fsx::write(&work.join("epoch-3.ckpt"), "state")?;
            bail!("interrupted")
        });
        assert!(work.join("epoch-3.ckpt").exists());
        assert_eq!(store.status().unwrap()[0].resumable, vec![key.clone()]);
        store
            .build("train", &key, &info, |tmp| {
                let resumed = fsx::read_to_string(&work.join("epoch-3.ckpt"))?;
                fsx::write(&tmp.join("final"), resumed)
            })
            .unwrap();
        assert!(!work.exists());
    }

    #[test]
    fn unwritable_root_names_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-folder");
        fsx::write(&file, "x").unwrap();
        let err = Store::open(file.join("artifacts")).err().expect("must fail");
        let msg = format!("{err:#}");
        assert!(msg.contains("not-a-folder/artifacts") && msg.contains("not writable"), "{msg}");
    }

    #[test]
    fn two_threads_build_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("artifacts");
        let runs = Arc::new(AtomicUsize::new(0));
        let info = info(0.7);
        let key = info.key("train");
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    let runs = runs.clone();
                    let (root, info, key) = (root.clone(), info.clone(), key.clone());
                    // A separate Store (and so a separate open lock file) per thread, as in two processes.
                    s.spawn(move || {
                        let store = Store::open(root).unwrap().with_progress(Progress::hidden());
                        store
                            .build("train", &key, &info, |tmp| {
                                runs.fetch_add(1, Ordering::SeqCst);
                                std::thread::sleep(std::time::Duration::from_millis(200));
                                fsx::write(&tmp.join("out"), "x")
                            })
                            .unwrap()
                    })
                })
                .collect();
            let cached: Vec<bool> = handles.into_iter().map(|h| h.join().unwrap().cached).collect();
            assert_eq!(cached.iter().filter(|c| **c).count(), 1, "{cached:?}");
        });
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    /// Set in a child process: the store root it builds into.
    const CHILD_ENV: &str = "LIPCTL_STORE_TEST_CHILD_ROOT";

    #[test]
    fn two_processes_build_once() {
        let info = info(0.8);
        let key = info.key("train");
        if let Ok(root) = std::env::var(CHILD_ENV) {
            // Child: build, counting builder runs in a shared file appended to with O_APPEND.
            let root = PathBuf::from(root);
            let store = Store::open(root.join("artifacts")).unwrap().with_progress(Progress::hidden());
            let art = store
                .build("train", &key, &info, |tmp| {
                    use std::io::Write;
                    let mut f = std::fs::OpenOptions::new().append(true).create(true).open(root.join("runs.log"))?;
                    writeln!(f, "{}", std::process::id())?;
                    std::thread::sleep(std::time::Duration::from_millis(300));
                    fsx::write(&tmp.join("out"), "x")
                })
                .unwrap();
            println!("child cached={}", art.cached);
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let exe = std::env::current_exe().unwrap();
        let children: Vec<_> = (0..2)
            .map(|_| {
                std::process::Command::new(&exe)
                    .args(["--exact", "store::tests::two_processes_build_once", "--nocapture", "--test-threads=1"])
                    .env(CHILD_ENV, dir.path())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut outputs = String::new();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success());
            outputs.push_str(&String::from_utf8_lossy(&out.stdout));
        }
        assert_eq!(outputs.matches("child cached=false").count(), 1, "{outputs}");
        assert_eq!(outputs.matches("child cached=true").count(), 1, "{outputs}");
        let runs = std::fs::read_to_string(dir.path().join("runs.log")).unwrap();
        assert_eq!(runs.lines().count(), 1, "builder ran in more than one process: {runs}");
    }
}
