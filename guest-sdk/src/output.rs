//! What a plugin renders, and what it observes.

use crate::{PartitionBinding, Placement, Rendered};
use k8s_openapi::Resource;
use serde::{Serialize, de::DeserializeOwned};

/// Collects rendered objects and partition bindings.
#[derive(Debug, Default)]
pub struct Output {
    objects: Vec<String>,
    partitions: Vec<PartitionBinding>,
    error: Option<String>,
}

impl Output {
    /// Add a typed Kubernetes object. `apiVersion` and `kind` come from the type.
    pub fn push<K: Resource + Serialize>(&mut self, object: K) {
        match serde_json::to_string(&object) {
            Ok(json) => self.objects.push(json),
            Err(err) => {
                self.error
                    .get_or_insert_with(|| format!("cannot encode a {}: {err}", K::KIND));
            }
        }
    }

    /// Add an object as JSON text, unchecked. For objects no k8s-openapi type
    /// describes (a custom resource), and for tests of a host's defences
    /// against malformed output; prefer [`Output::push`].
    pub fn push_raw(&mut self, json: String) {
        self.objects.push(json);
    }

    /// Set label `key=value` on every object pushed so far, for example a
    /// marker that a wrapping plugin adds to another plugin's output.
    pub fn label_all(&mut self, key: &str, value: &str) {
        for json in &mut self.objects {
            let Ok(mut object) = serde_json::from_str::<serde_json::Value>(json) else {
                continue; // push_raw() text that is not JSON stays as it is
            };
            object["metadata"]["labels"][key] = value.into();
            *json = object.to_string();
        }
    }

    /// Say where clients reach `partition` (`port` on Service `service`)
    /// and where its data lives. Bind every partition exactly once.
    pub fn bind(
        &mut self,
        partition: u32,
        service: impl Into<String>,
        port: u16,
        placement: Placement,
    ) {
        self.partitions.push(PartitionBinding {
            partition,
            service: service.into(),
            port,
            placement,
        });
    }

    pub(crate) fn finish(self) -> Result<Rendered, String> {
        match self.error {
            Some(err) => Err(err),
            None => Ok(Rendered {
                objects: self.objects,
                partitions: self.partitions,
            }),
        }
    }
}

/// The objects atoll observed in the cluster for one Database.
#[derive(Debug, Default)]
pub struct Observed {
    objects: Vec<serde_json::Value>,
}

impl Observed {
    /// Parse observed objects; entries that are not JSON are ignored, since
    /// readiness must never fail on something the plugin cannot read.
    pub fn parse(objects: &[String]) -> Self {
        Observed {
            objects: objects
                .iter()
                .filter_map(|o| serde_json::from_str(o).ok())
                .collect(),
        }
    }

    /// Build from values (tests).
    pub fn from_values(objects: Vec<serde_json::Value>) -> Self {
        Observed { objects }
    }

    /// The observed object of type `K` named `name`, if present and readable.
    /// Decoding a large type costs plugin size; prefer [`Observed::find`] for
    /// reading a few fields.
    pub fn get<K: Resource + DeserializeOwned>(&self, name: &str) -> Option<K> {
        self.find(K::KIND, name)
            .filter(|o| o["apiVersion"] == K::API_VERSION)
            .and_then(|o| serde_json::from_value(o.clone()).ok())
    }

    /// The raw observed object of `kind` named `name`.
    pub fn find(&self, kind: &str, name: &str) -> Option<&serde_json::Value> {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
    }

    /// Ready replicas of StatefulSet `name`, checked against `want`. A
    /// StatefulSet whose spec still has another replica count (not yet
    /// updated) counts as having none ready, so readiness is never claimed
    /// early.
    ///
    /// Reads the fields directly rather than decoding a whole StatefulSet:
    /// the full decoder is a large share of a plugin's size budget.
    pub fn statefulset_ready(&self, name: &str, want: i32) -> i32 {
        let Some(sts) = self.find("StatefulSet", name) else {
            return 0;
        };
        let spec_replicas = sts["spec"]["replicas"].as_i64().unwrap_or(1);
        let ready = sts["status"]["readyReplicas"].as_i64().unwrap_or(0);
        if spec_replicas == i64::from(want) {
            ready as i32
        } else {
            0
        }
    }

    /// Ready replicas of Deployment `name`, `0` if absent.
    pub fn deployment_ready(&self, name: &str) -> i32 {
        self.find("Deployment", name)
            .and_then(|d| d["status"]["readyReplicas"].as_i64())
            .unwrap_or(0) as i32
    }
}
