//! Volumes outlive their Database unless it asks otherwise
//! (`spec.deletionPolicy`), whatever the plugin renders.
//!
//! - Every StatefulSet gets `persistentVolumeClaimRetentionPolicy`:
//!   `whenScaled: Retain` always (a scale-down never deletes a replica's
//!   claim) and `whenDeleted` from the policy. A plugin value that differs is
//!   replaced, and the replacement is written on the object in the
//!   `atoll.dev/overridden` annotation.
//! - A PersistentVolumeClaim the plugin renders directly gets, under
//!   `Retain`, no owner reference (the garbage collector would delete it with
//!   the Database) but the label `atoll.dev/retained-from: <uid>`, which is
//!   how atoll recognises it as the Database's own. Under `Delete` it is
//!   owned like every other child.

use serde_json::{Map, Value, json};

use crate::api::{ANNOTATION_OVERRIDDEN, DeletionPolicy, LABEL_RETAINED_FROM};

/// Set the retention policy of a StatefulSet; returns what was overridden.
pub(super) fn statefulset(object: &mut Value, policy: DeletionPolicy) -> Option<String> {
    let when_deleted = match policy {
        DeletionPolicy::Retain => "Retain",
        DeletionPolicy::Delete => "Delete",
    };
    let wanted = json!({"whenDeleted": when_deleted, "whenScaled": "Retain"});
    let spec = object.get_mut("spec")?.as_object_mut()?;
    let rendered = spec.insert(
        "persistentVolumeClaimRetentionPolicy".into(),
        wanted.clone(),
    );
    let mut changed = Vec::new();
    for field in ["whenDeleted", "whenScaled"] {
        let from = rendered.as_ref().and_then(|r| r[field].as_str());
        if let Some(from) = from.filter(|f| Some(*f) != wanted[field].as_str()) {
            changed.push(format!(
                "persistentVolumeClaimRetentionPolicy.{field} {from} → {}",
                wanted[field].as_str().unwrap_or_default()
            ));
        }
    }
    (!changed.is_empty()).then(|| {
        format!(
            "{} (deletionPolicy {when_deleted}; scale-downs always retain claims)",
            changed.join(", ")
        )
    })
}

/// Whether a directly rendered claim keeps no owner reference.
pub(super) fn retained_claim(kind: &str, policy: DeletionPolicy) -> bool {
    kind == "PersistentVolumeClaim" && policy == DeletionPolicy::Retain
}

/// Mark a retained claim as the Database's own.
pub(super) fn mark_retained(metadata: &mut Map<String, Value>, uid: &str) {
    if let Some(labels) = metadata.get_mut("labels").and_then(Value::as_object_mut) {
        labels.insert(LABEL_RETAINED_FROM.into(), uid.into());
    }
    metadata.remove("ownerReferences");
}

/// Record `note` on the object, for `kubectl describe` and the status.
pub(super) fn annotate(metadata: &mut Map<String, Value>, note: String) {
    let annotations = metadata
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(annotations) = annotations.as_object_mut() {
        annotations.insert(ANNOTATION_OVERRIDDEN.into(), note.into());
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn scale_downs_always_retain_and_deletion_follows_the_policy() {
        let mut sts = json!({"kind": "StatefulSet", "spec": {"replicas": 3}});
        assert_eq!(statefulset(&mut sts, DeletionPolicy::Retain), None);
        assert_eq!(
            sts["spec"]["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
        );
        let mut sts = json!({"kind": "StatefulSet", "spec": {
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Delete"}}});
        let note = statefulset(&mut sts, DeletionPolicy::Retain).expect("overridden");
        assert!(note.contains("whenDeleted Delete → Retain"), "{note}");
        assert!(note.contains("whenScaled Delete → Retain"), "{note}");
        let mut sts = json!({"kind": "StatefulSet", "spec": {
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Delete"}}});
        let note = statefulset(&mut sts, DeletionPolicy::Delete).expect("overridden");
        assert!(!note.contains("whenDeleted"), "{note}");
        assert_eq!(
            sts["spec"]["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Delete", "whenScaled": "Retain"})
        );
    }
}
