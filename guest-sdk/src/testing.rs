//! A native harness for plugin unit tests: runs a plugin through the same
//! [`dispatch`] functions the component exports, and decodes
//! the JSON it produced so tests assert on objects, not strings.

use k8s_openapi::Resource;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{Database, PartitionBinding, Plugin, RenderError, StatusReport, Violation, dispatch};

/// A render's output, decoded.
#[derive(Debug, Clone)]
pub struct Objects {
    pub objects: Vec<Value>,
    pub partitions: Vec<PartitionBinding>,
}

impl Objects {
    /// Names of the objects of `kind`, in render order.
    pub fn names(&self, kind: &str) -> Vec<String> {
        self.objects
            .iter()
            .filter(|o| o["kind"] == kind)
            .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_string))
            .collect()
    }

    /// The object of `kind` named `name`; panics listing what exists if absent.
    pub fn get(&self, kind: &str, name: &str) -> &Value {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}; have {:?}", self.names(kind)))
    }

    /// The object `name` decoded as `K`.
    pub fn typed<K: Resource + DeserializeOwned>(&self, name: &str) -> K {
        serde_json::from_value(self.get(K::KIND, name).clone())
            .unwrap_or_else(|e| panic!("{} {name} does not decode: {e}", K::KIND))
    }
}

/// Render `db` with plugin `P`, decoding every object.
///
/// # Errors
/// What the plugin's render returns: violations or a failure.
pub fn render<P: Plugin>(db: &Database) -> Result<Objects, RenderError> {
    let rendered = dispatch::render::<P>(db)?;
    Ok(Objects {
        objects: rendered
            .objects
            .iter()
            .map(|o| serde_json::from_str(o).expect("plugin output is JSON"))
            .collect(),
        partitions: rendered.partitions,
    })
}

/// The violations `P` reports for `db` (empty if valid).
pub fn violations<P: Plugin>(db: &Database) -> Vec<Violation> {
    dispatch::validate::<P>(db).err().unwrap_or_default()
}

/// `P`'s status over `observed`.
pub fn status<P: Plugin>(db: &Database, observed: &[Value]) -> StatusReport {
    let observed: Vec<String> = observed.iter().map(Value::to_string).collect();
    dispatch::status::<P>(db, &observed)
}

/// `object` as the API server would report it with `status` merged in, e.g.
/// `with_status(sts, json!({"readyReplicas": 3}))`.
pub fn with_status(object: &Value, status: Value) -> Value {
    let mut object = object.clone();
    object["status"] = status;
    object
}
