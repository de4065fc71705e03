//! Golden cases: one JSON file each, in the format of
//! `guest-sdk/vectors/README.md`. Inputs are read strictly (a bad case names
//! its file and field); expected answers are kept as JSON values and compared
//! with what the plugin answers.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Map, Value, json};

use crate::contract::{
    PartitionBinding, Placement, PluginDatabase, PluginRenderError, Rendered, StatusReport,
    Violation, WorkloadRef,
};

/// One case file.
pub struct Case {
    pub name: String,
    pub path: PathBuf,
    /// The whole file, rewritten in place by `--update`.
    pub doc: Map<String, Value>,
    pub database: PluginDatabase,
}

/// Every `*.json` case in `dir`, sorted by name.
///
/// # Errors
/// The directory cannot be read, holds no case, or a case is malformed.
pub fn load_dir(dir: &Path) -> Result<Vec<Case>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the cases directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        bail!(
            "{} holds no case (*.json); see guest-sdk/vectors/README.md for the format",
            dir.display()
        );
    }
    paths.iter().map(|p| load(p)).collect()
}

fn load(path: &Path) -> Result<Case> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let doc: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let Value::Object(doc) = doc else {
        bail!("{}: a case is a JSON object", path.display());
    };
    let database = database(doc.get("database")).with_context(|| format!("{}", path.display()))?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Case {
        name,
        path: path.to_path_buf(),
        doc,
        database,
    })
}

fn database(value: Option<&Value>) -> Result<PluginDatabase> {
    let db = value
        .and_then(Value::as_object)
        .ok_or_else(|| anyhow!("`database` must be an object with at least name and partitions"))?;
    let string = |key: &str, default: &str| -> Result<String> {
        match db.get(key) {
            None => Ok(default.to_string()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => bail!("database.{key} must be a string"),
        }
    };
    let name = string("name", "")?;
    if name.is_empty() {
        bail!("database.name is required");
    }
    let partitions = db
        .get("partitions")
        .and_then(Value::as_u64)
        .and_then(|p| u32::try_from(p).ok())
        .ok_or_else(|| anyhow!("database.partitions is required: a number, 0 or more"))?;
    let generation = match db.get("generation") {
        None => 1,
        Some(g) => g
            .as_i64()
            .ok_or_else(|| anyhow!("database.generation must be an integer"))?,
    };
    let labels = match db.get("labels") {
        None => Vec::new(),
        Some(Value::Object(map)) => {
            let mut pairs = Vec::new();
            for (k, v) in map {
                let v = v
                    .as_str()
                    .ok_or_else(|| anyhow!("database.labels.{k} must be a string"))?;
                pairs.push((k.clone(), v.to_string()));
            }
            pairs.sort();
            pairs
        }
        Some(_) => bail!("database.labels must be an object of strings"),
    };
    let config = match (db.get("configText"), db.get("config")) {
        (Some(_), Some(_)) => bail!("database: give config or configText, not both"),
        (Some(Value::String(text)), None) => text.clone(),
        (Some(_), None) => bail!("database.configText must be a string"),
        (None, Some(value)) => value.to_string(),
        (None, None) => "{}".to_string(),
    };
    Ok(PluginDatabase {
        name,
        namespace: string("namespace", "default")?,
        uid: string("uid", "")?,
        generation,
        labels,
        partitions,
        config,
        cluster_domain: string("clusterDomain", "cluster.local")?,
    })
}

/// The observed objects of status case `index`, built from `objects` (the
/// expected render) as the README says.
///
/// # Errors
/// The status case is malformed or names an object the render lacks.
pub fn observed(case: &Value, objects: &[Value]) -> Result<Vec<String>> {
    let Some(list) = case.get("observed") else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or_else(|| anyhow!("`observed` must be an array"))?;
    list.iter()
        .enumerate()
        .map(|(i, entry)| {
            if let Some(object) = entry.get("object") {
                return Ok(object.to_string());
            }
            let reference = entry
                .get("rendered")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    anyhow!("observed[{i}]: give {{\"object\": ...}} or {{\"rendered\": \"Kind/name\", \"status\": ...}}")
                })?;
            let (kind, name) = reference
                .split_once('/')
                .ok_or_else(|| anyhow!("observed[{i}].rendered: write Kind/name, e.g. StatefulSet/db-1"))?;
            let mut object = objects
                .iter()
                .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
                .cloned()
                .ok_or_else(|| {
                    anyhow!("observed[{i}]: the expected render has no {kind} {name}")
                })?;
            if let Some(status) = entry.get("status") {
                object["status"] = status.clone();
            }
            Ok(object.to_string())
        })
        .collect()
}

/// Violations as the case format writes them.
pub fn violations(list: &[Violation]) -> Value {
    Value::Array(
        list.iter()
            .map(|v| json!({"field": v.field, "message": v.message}))
            .collect(),
    )
}

/// A render answer as the case format writes it; objects that are not JSON
/// are kept as strings so the diff shows them.
pub fn render(answer: &Result<Rendered, PluginRenderError>) -> Value {
    match answer {
        Ok(rendered) => json!({
            "objects": rendered
                .objects
                .iter()
                .map(|o| serde_json::from_str(o).unwrap_or_else(|_| Value::String(o.clone())))
                .collect::<Vec<Value>>(),
            "partitions": rendered.partitions.iter().map(binding).collect::<Vec<Value>>(),
        }),
        Err(PluginRenderError::Invalid(v)) => json!({"invalid": violations(v)}),
        Err(PluginRenderError::Failed(message)) => json!({"failed": message}),
    }
}

fn binding(b: &PartitionBinding) -> Value {
    let placement = match &b.placement {
        Placement::Unknown => json!("unknown"),
        Placement::Nowhere => json!("nowhere"),
        Placement::Workload(WorkloadRef { kind, name }) => json!({"kind": kind, "name": name}),
    };
    json!({"partition": b.partition, "service": b.service, "port": b.port, "placement": placement})
}

/// A status report as the case format writes it.
pub fn status(report: &StatusReport) -> Value {
    json!({
        "readyPartitions": report.ready_partitions,
        "availablePartitions": report.available_partitions,
        "message": report.message,
    })
}

/// Write `case` back (after `--update`), pretty, keys in canonical order.
///
/// # Errors
/// The file cannot be written.
pub fn save(case: &Case) -> Result<()> {
    let text = super::canonical::pretty(&Value::Object(case.doc.clone())) + "\n";
    std::fs::write(&case.path, text)
        .with_context(|| format!("cannot write {}", case.path.display()))
}
