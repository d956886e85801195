//! `lipctl import --from-pytorch`: a state dict saved by the authors' code, published as a lipctl
//! model artifact (stage `import`): `model.safetensors` in lipctl's checkpoint format, beside
//! `import.json` ([`ImportRecord`]), which marks it imported and names the source file and its
//! SHA-256.
//!
//! The artifact key is computed from the source's SHA-256 and the network (method, size, kernel,
//! input side, classes, dataset label), so importing the same file again is a cache hit and a
//! different file is a different artifact. The `.pth` is read by the project's Python
//! ([`crate::pytorch`], never unpickled with code execution) and mapped by
//! [`crate::nn::authors`]; every check runs before the store is touched, so a bad file leaves
//! nothing behind.
//!
//! An imported model is certified like a trained one by `lipctl import … --certify`
//! (`pipeline::certify_imported`: a `certify` artifact with inputs `[import key, prepare key]`),
//! shown by `aggregate` and `report` (rows with `stage` "imported" and the table "The authors'
//! models, certified by lipctl"), and attacked by `lipctl attack --model <artifact>/model.safetensors`.

use crate::fsx;
use crate::nn::{authors, checkpoint, ConvNet, Method, ModelSize, NetSpec};
use crate::records::{self, KeyOrder, Record};
use crate::store::{Artifact, ManifestInfo, Store};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use tch::{nn::VarStore, Device};

/// The store stage of imported models.
pub const STAGE: &str = "import";
/// The model file inside an `import` artifact (the same name as in a `train` artifact).
pub const MODEL_FILE: &str = "model.safetensors";

/// What to import.
#[derive(Clone, Debug)]
pub struct ImportRequest {
    /// The authors' `.pth` state dict.
    pub source: PathBuf,
    pub method: Method,
    pub size: ModelSize,
    /// Input side in pixels (32 for CIFAR, 64 for Tiny ImageNet).
    pub input_side: i64,
    /// Classes of the head.
    pub classes: i64,
    /// The dataset the model was trained on (`cifar10`, …), when known; a label for reports.
    pub dataset: Option<String>,
}

/// `import.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImportRecord {
    /// Always `"imported"`: the model was not trained by lipctl.
    pub origin: String,
    /// File name of the source state dict (as given, without its folder).
    pub source_file: String,
    /// SHA-256 of the source file (hex).
    pub source_sha256: String,
    /// The network the tensors were mapped to.
    pub net: NetSpec,
    pub dataset: Option<String>,
    /// The model file of this artifact.
    pub model_file: String,
    /// Tensors imported from the file.
    pub tensors_imported: usize,
    /// lipctl tensors not in the authors' file, and how they were set.
    pub recomputed: Vec<String>,
}

impl Record for ImportRecord {
    const FILE: &'static str = "import.json";
    const SCHEMA_VERSION: u32 = 1;
    const WHAT: &'static str = "an imported model";
    const KEY_ORDER: KeyOrder = KeyOrder::Sorted;
}

/// The classes of a paper dataset by its name (`cifar10` 10, `cifar100` 100, `tinyimagenet` 200)
/// and its input side.
pub fn dataset_shape(dataset: crate::paper::Dataset) -> (i64, i64) {
    let classes = match dataset {
        crate::paper::Dataset::Cifar10 => 10,
        crate::paper::Dataset::Cifar100 => 100,
        crate::paper::Dataset::TinyImageNet => 200,
    };
    (classes, dataset.input_side() as i64)
}

/// Imports `req.source` into `store`; returns the (new or cached) artifact.
///
/// Errors (nothing is written): the file is missing, truncated, not a state dict, or a pickle
/// that needs code execution; a key is missing, unexpected or of another shape (the message names
/// the key and the file); no Python with torch is found.
pub fn import(req: &ImportRequest, store: &Store) -> anyhow::Result<Artifact> {
    let spec = NetSpec::new(req.method, req.size, req.input_side, req.classes);
    let sum = fsx::checksum_file(&req.source)?;
    let file = crate::pytorch::read_state_dict(&req.source)?;
    let mut vs = VarStore::new(Device::Cpu);
    ConvNet::new(&vs.root(), spec).with_context(|| format!("building the {} {} network", req.method, req.size))?;
    let recomputed = authors::load_authors(&mut vs, req.method, &file, &req.source)?;
    let record = ImportRecord {
        origin: "imported".into(),
        source_file: fsx::file_name_text(&req.source).unwrap_or_else(|| req.source.display().to_string()),
        source_sha256: sum.sha256.clone(),
        net: spec,
        dataset: req.dataset.clone(),
        model_file: MODEL_FILE.into(),
        tensors_imported: file.len(),
        recomputed,
    };
    let config = serde_json::json!({
        "source_sha256": sum.sha256,
        "net": spec,
        "dataset": req.dataset,
    });
    let info = ManifestInfo::new(ImportRecord::SCHEMA_VERSION, config);
    let key = info.key(STAGE);
    store.build(STAGE, &key, &info, |tmp| {
        checkpoint::save(&vs, &tmp.join(MODEL_FILE))?;
        records::write(tmp, &record)
    })
}

/// Every committed `import` artifact with its record.
pub fn list(store: &Store) -> anyhow::Result<Vec<(Artifact, ImportRecord)>> {
    let mut out = Vec::new();
    for key in store.list(STAGE)? {
        if let Some(art) = store.lookup(STAGE, &key)? {
            let record: ImportRecord = records::read(&art)?;
            out.push((art, record));
        }
    }
    Ok(out)
}

/// Loads an imported model's network into a fresh CPU VarStore (strictly, as every lipctl model).
pub fn load(art: &Artifact, record: &ImportRecord) -> anyhow::Result<(VarStore, ConvNet)> {
    let mut vs = VarStore::new(Device::Cpu);
    let net = ConvNet::new(&vs.root(), record.net)?;
    checkpoint::load_strict(&mut vs, &art.path(&record.model_file))?;
    Ok((vs, net))
}

/// The model file of an import artifact.
pub fn model_path(art: &Artifact) -> PathBuf {
    art.path(MODEL_FILE)
}
