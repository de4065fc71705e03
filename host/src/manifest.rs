//! Reading Database manifests (multi-document YAML or JSON) for the CLI, with
//! errors that name the file, the document and the field.

use serde_json::Value;

use crate::api::{API_VERSION, Database, KIND_DATABASE};

/// A manifest could not be read as Databases.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {location}{message}")]
pub struct ManifestError {
    pub origin: String,
    /// `document N (Database ns/name): ` or empty.
    pub location: String,
    pub message: String,
}

/// Fields a Database spec may have; anything else is a typo that the API
/// server would silently drop, so the CLI refuses it.
const SPEC_FIELDS: &[&str] = &["partitions", "storage", "deletionPolicy", "pod"];
const STORAGE_FIELDS: &[&str] = &["plugin", "version", "config"];
const POD_FIELDS: &[&str] = &[
    "env",
    "nodeSelector",
    "tolerations",
    "affinity",
    "topologySpreadConstraints",
    "priorityClassName",
    "labels",
    "annotations",
    "resources",
    "securityContext",
];

/// Parse every document in `text` as a Database. `origin` names the source
/// (a path or `-`) in errors. Namespace defaults to `default`, like kubectl.
///
/// # Errors
/// A document that is not YAML or JSON, not a Database, or has unknown fields; the error names the origin, the document and the field.
pub fn parse_databases(origin: &str, text: &str) -> Result<Vec<Database>, ManifestError> {
    let err = |location: String, message: String| ManifestError {
        origin: origin.to_string(),
        location,
        message,
    };
    let docs: Vec<Value> = serde_saphyr::from_multiple(text)
        .map_err(|e| err(String::new(), format!("not valid YAML or JSON: {e}")))?;
    let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
    if docs.is_empty() {
        return Err(err(String::new(), "contains no Database manifest".into()));
    }
    docs.into_iter()
        .enumerate()
        .map(|(i, doc)| {
            let name = doc["metadata"]["name"].as_str().unwrap_or("<unnamed>");
            let namespace = doc["metadata"]["namespace"].as_str().unwrap_or("default");
            let location = format!("document {} (Database {namespace}/{name}): ", i + 1);
            parse_one(doc).map_err(|message| err(location, message))
        })
        .collect()
}

fn parse_one(doc: Value) -> Result<Database, String> {
    let (api_version, kind) = (doc["apiVersion"].as_str(), doc["kind"].as_str());
    if api_version != Some(API_VERSION) || kind != Some(KIND_DATABASE) {
        return Err(format!(
            "is {}/{}, not a {API_VERSION} {KIND_DATABASE}; this command takes Database manifests",
            api_version.unwrap_or("<no apiVersion>"),
            kind.unwrap_or("<no kind>")
        ));
    }
    if doc["metadata"]["name"].as_str().is_none_or(str::is_empty) {
        return Err("metadata.name: is required".into());
    }
    unknown_fields(&doc["spec"], "spec", SPEC_FIELDS)?;
    unknown_fields(&doc["spec"]["storage"], "spec.storage", STORAGE_FIELDS)?;
    unknown_fields(&doc["spec"]["pod"], "spec.pod", POD_FIELDS)?;
    let mut db: Database = serde_path_to_error::deserialize(doc).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        }
    })?;
    db.metadata
        .namespace
        .get_or_insert_with(|| "default".into());
    Ok(db)
}

fn unknown_fields(value: &Value, path: &str, allowed: &[&str]) -> Result<(), String> {
    let Some(map) = value.as_object() else {
        return Ok(()); // missing or mistyped: the typed parse reports it
    };
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "{path}.{k}: unknown field; allowed fields are {}",
            allowed.join(", ")
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_several_documents_and_defaults_the_namespace() {
        let text = "apiVersion: atoll.dev/v1alpha1\nkind: Database\nmetadata: {name: a}\nspec: {partitions: 2, storage: {plugin: raft}}\n---\napiVersion: atoll.dev/v1alpha1\nkind: Database\nmetadata: {name: b, namespace: x}\nspec: {partitions: 1, storage: {plugin: cache, config: {partitionsPerNode: 2}}}\n";
        let dbs = parse_databases("f.yaml", text).unwrap();
        assert_eq!(dbs.len(), 2);
        assert_eq!(dbs[0].metadata.namespace.as_deref(), Some("default"));
        assert_eq!(
            dbs[1].spec.storage.config.as_ref().unwrap()["partitionsPerNode"],
            2
        );
    }

    #[test]
    fn every_spec_pod_field_is_allowed() {
        let full = crate::api::PodOverrides {
            env: Some(vec![]),
            node_selector: Some(Default::default()),
            tolerations: Some(vec![]),
            affinity: Some(Default::default()),
            topology_spread_constraints: Some(vec![]),
            priority_class_name: Some(String::new()),
            labels: Some(Default::default()),
            annotations: Some(Default::default()),
            resources: Some(Default::default()),
            security_context: Some(Default::default()),
        };
        let value = serde_json::to_value(full).unwrap();
        let mut fields: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut allowed = POD_FIELDS.to_vec();
        fields.sort_unstable();
        allowed.sort_unstable();
        assert_eq!(fields, allowed);
    }

    #[test]
    fn errors_name_file_document_and_field() {
        let text = "apiVersion: atoll.dev/v1alpha1\nkind: Database\nmetadata: {name: a}\nspec: {partitions: many, storage: {plugin: raft}}\n";
        let e = parse_databases("f.yaml", text).unwrap_err().to_string();
        assert!(
            e.starts_with("f.yaml: document 1 (Database default/a): spec.partitions:"),
            "{e}"
        );

        let text = "apiVersion: atoll.dev/v1alpha1\nkind: Database\nmetadata: {name: a}\nspec: {partitions: 1, storage: {plugin: raft, confg: {}}}\n";
        let e = parse_databases("f.yaml", text).unwrap_err().to_string();
        assert!(e.contains("spec.storage.confg: unknown field"), "{e}");

        let text = "apiVersion: atoll.dev/v1alpha1\nkind: Database\nmetadata: {name: a}\nspec: {partitions: 1, storage: {plugin: raft}, pod: {nodeSelector: {a: b}, tolerance: []}}\n";
        let e = parse_databases("f.yaml", text).unwrap_err().to_string();
        assert!(e.contains("spec.pod.tolerance: unknown field"), "{e}");

        let e = parse_databases(
            "f.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("v1/ConfigMap, not a atoll.dev/v1alpha1 Database"),
            "{e}"
        );
    }
}
