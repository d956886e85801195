//! Artifact records: the JSON files the stages publish (`meta.json`, `measure.json`,
//! `budget.json`, `train.json`, `certify.json`; docs/artifacts.md). Each is one serde type, next
//! to the stage that owns it ([`crate::data::Meta`], [`crate::measure::MeasureRecord`],
//! [`crate::budgets::Budget`], [`crate::train::TrainRecord`], [`crate::certify::CertifyRecord`]),
//! and is written and read through that type with [`fn@write`] and [`read`], so the stage that writes
//! a field and the aggregate that reads it cannot drift apart.
//!
//! # Schema version
//!
//! A record's [`Record::SCHEMA_VERSION`] is its stage's `schema_version` (the stage's key hashes
//! it, and `manifest.json` beside the record states it; `pipeline::plan::Stage::schema_version`
//! returns the record's constant). [`read`] refuses a record whose manifest states another
//! version. Bump the constant when a field is renamed or removed or changes meaning: every key of
//! the stage changes with it, so old and new records never share a key. Adding an optional field
//! (`#[serde(default)]`) needs no bump.
//!
//! # Bytes
//!
//! [`KeyOrder`] keeps each file byte for byte as lipctl has always written it: the records that
//! began as `json!` objects (measure, train, certify) have their keys sorted at every level; the
//! others (meta, budget) are in the order their fields are declared.

use crate::store::Artifact;
use anyhow::Context;
use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;

/// The order of the keys of a record's JSON objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyOrder {
    /// Sorted at every level (written through a [`serde_json::Value`], whose maps are sorted).
    Sorted,
    /// As the fields are declared in the type.
    Declared,
}

/// A JSON record published in an artifact (module doc).
pub trait Record: Serialize + DeserializeOwned {
    /// File name inside the artifact folder.
    const FILE: &'static str;
    /// Layout version: the owning stage's `schema_version` (module doc).
    const SCHEMA_VERSION: u32;
    /// What the file holds, for messages: "a training outcome".
    const WHAT: &'static str;
    /// Key order of the written JSON (module doc).
    const KEY_ORDER: KeyOrder;
}

/// The pretty-printed JSON of `record` (two-space indent, no trailing newline) in its key order.
pub fn to_json<R: Record>(record: &R) -> anyhow::Result<Vec<u8>> {
    let text = match R::KEY_ORDER {
        KeyOrder::Sorted => serde_json::to_vec_pretty(&serde_json::to_value(record)?),
        KeyOrder::Declared => serde_json::to_vec_pretty(record),
    };
    text.with_context(|| format!("serialising {}", R::FILE))
}

/// Writes `record` as `dir/<R::FILE>`.
pub fn write<R: Record>(dir: &Path, record: &R) -> anyhow::Result<()> {
    crate::fsx::write(&dir.join(R::FILE), to_json(record)?)
}

/// Reads the `R` of a committed artifact, after checking that its manifest states
/// [`Record::SCHEMA_VERSION`].
pub fn read<R: Record>(artifact: &Artifact) -> anyhow::Result<R> {
    let path = artifact.path(R::FILE);
    let version = artifact.manifest.schema_version;
    anyhow::ensure!(
        version == R::SCHEMA_VERSION,
        "`{}` has schema version {version} (its manifest.json); this lipctl reads version {} of {}",
        path.display(),
        R::SCHEMA_VERSION,
        R::FILE
    );
    read_file(&path)
}

/// Reads an `R` from `path` (a file outside the store, or inside an artifact without the version
/// check of [`read`]).
pub fn read_file<R: Record>(path: &Path) -> anyhow::Result<R> {
    serde_json::from_str(&crate::fsx::read_to_string(path)?)
        .with_context(|| format!("`{}` is not {}", path.display(), R::WHAT))
}
