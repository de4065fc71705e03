//! Canonical JSON: the exact text the Rust SDK writes for an object (through
//! k8s-openapi and serde_json), so a port's output can be compared byte for
//! byte. See `guest-sdk/vectors/README.md`.
//!
//! Keys are in ascending byte order, except that an object having
//! `apiVersion`, `kind` and `metadata` (a Kubernetes object, nested ones
//! such as volume claim templates included) starts with `apiVersion` then
//! `kind`: k8s-openapi serializes every type's fields sorted by JSON name,
//! with those two first on resource types. Strings are escaped by
//! serde_json itself.

use serde_json::{Map, Value};

/// `value` as compact canonical JSON.
pub fn compact(value: &Value) -> String {
    let mut out = String::new();
    write(value, None, 0, &mut out);
    out
}

/// `value` pretty-printed (two-space indent, as serde_json does) with the
/// canonical key order: for case files and diffs.
pub fn pretty(value: &Value) -> String {
    let mut out = String::new();
    write(value, Some("  "), 0, &mut out);
    out
}

/// The keys of `map` in canonical order.
pub fn ordered_keys(map: &Map<String, Value>) -> Vec<&String> {
    let resource = ["apiVersion", "kind", "metadata"]
        .iter()
        .all(|k| map.contains_key(*k));
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort_by(|a, b| {
        let rank = |k: &str| match (resource, k) {
            (true, "apiVersion") => 0,
            (true, "kind") => 1,
            _ => 2,
        };
        rank(a)
            .cmp(&rank(b))
            .then_with(|| a.as_bytes().cmp(b.as_bytes()))
    });
    keys
}

fn write(value: &Value, indent: Option<&str>, depth: usize, out: &mut String) {
    let newline = |out: &mut String, depth: usize| {
        if let Some(unit) = indent {
            out.push('\n');
            for _ in 0..depth {
                out.push_str(unit);
            }
        }
    };
    match value {
        Value::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, depth + 1);
                write(item, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push(']');
        }
        Value::Object(map) if !map.is_empty() => {
            out.push('{');
            for (i, key) in ordered_keys(map).into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, depth + 1);
                out.push_str(&Value::String(key.clone()).to_string());
                out.push_str(if indent.is_some() { ": " } else { ":" });
                write(&map[key], indent, depth + 1, out);
            }
            newline(out, depth);
            out.push('}');
        }
        // Scalars, `[]` and `{}`: serde_json's own text.
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resources_lead_with_api_version_and_kind_and_the_rest_is_sorted() {
        let object = json!({
            "spec": {"b": 1, "a": [{"z": "\n", "y": "é/"}]},
            "metadata": {"name": "x"},
            "kind": "ConfigMap",
            "apiVersion": "v1",
        });
        assert_eq!(
            compact(&object),
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"spec":{"a":[{"y":"é/","z":"\n"}],"b":1}}"#
        );
        // Without metadata it is not a Kubernetes object: plain sorted order,
        // as k8s-openapi writes an ObjectReference.
        assert_eq!(
            compact(&json!({"name": "n", "kind": "K", "apiVersion": "v"})),
            r#"{"apiVersion":"v","kind":"K","name":"n"}"#
        );
        assert_eq!(
            compact(&json!({"name": "n", "apiVersion": "v", "fieldPath": "f"})),
            r#"{"apiVersion":"v","fieldPath":"f","name":"n"}"#
        );
    }

    #[test]
    fn pretty_matches_serde_json_layout() {
        let value = json!({"b": [], "a": {}, "c": [1, {"d": null}]});
        assert_eq!(
            pretty(&value),
            "{\n  \"a\": {},\n  \"b\": [],\n  \"c\": [\n    1,\n    {\n      \"d\": null\n    }\n  ]\n}"
        );
        // For sorted input, the same text serde_json writes.
        assert_eq!(
            pretty(&value),
            serde_json::to_string_pretty(&value).unwrap()
        );
    }
}
