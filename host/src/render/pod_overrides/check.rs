//! Validation of `spec.pod` before any plugin runs: every violation names its
//! field (`spec.pod.env[2].name`) and says how to fix it, so a typo is an
//! `InvalidSpec` status rather than an API server rejection halfway through
//! applying a Database's children.

use std::collections::{BTreeMap, BTreeSet};

use atoll_guest::quantity;

use crate::api::{GROUP, LABEL_MANAGED_BY, PodOverrides};
use crate::contract::Violation;

/// Most bytes of all annotations of one object, as the API server counts.
const MAX_ANNOTATION_BYTES: usize = 256 * 1024;

/// Every violation of `pod`, in field order.
pub fn check(pod: &PodOverrides) -> Vec<Violation> {
    let mut v = Vec::new();
    if let Some(env) = &pod.env {
        check_env(env, &mut v);
    }
    if let Some(selector) = &pod.node_selector {
        check_labels("spec.pod.nodeSelector", selector, false, &mut v);
    }
    if let Some(tolerations) = &pod.tolerations {
        check_tolerations(tolerations, &mut v);
    }
    if let Some(name) = &pod.priority_class_name
        && let Err(e) = dns_subdomain(name)
    {
        v.push(violation(
            "spec.pod.priorityClassName",
            format!("must name a PriorityClass: {e}"),
        ));
    }
    if let Some(labels) = &pod.labels {
        check_labels("spec.pod.labels", labels, true, &mut v);
    }
    if let Some(annotations) = &pod.annotations {
        check_annotations(annotations, &mut v);
    }
    if let Some(resources) = &pod.resources {
        check_resources(resources, &mut v);
    }
    v
}

fn check_env(env: &[k8s_openapi::api::core::v1::EnvVar], v: &mut Vec<Violation>) {
    let mut seen = BTreeSet::new();
    for (i, var) in env.iter().enumerate() {
        let path = format!("spec.pod.env[{i}]");
        if let Err(e) = env_name(&var.name) {
            v.push(violation(&format!("{path}.name"), e));
        } else if !seen.insert(var.name.as_str()) {
            v.push(violation(
                &format!("{path}.name"),
                format!("`{}` is set twice: keep one entry per variable", var.name),
            ));
        }
        if var.value.is_some() && var.value_from.is_some() {
            v.push(violation(
                &path,
                "sets both value and valueFrom: keep one".to_string(),
            ));
        }
    }
}

fn check_tolerations(
    tolerations: &[k8s_openapi::api::core::v1::Toleration],
    v: &mut Vec<Violation>,
) {
    for (i, t) in tolerations.iter().enumerate() {
        let path = format!("spec.pod.tolerations[{i}]");
        match t.operator.as_deref() {
            None | Some("" | "Equal") => {}
            Some("Exists") if t.value.as_deref().unwrap_or_default().is_empty() => {}
            Some("Exists") => v.push(violation(
                &format!("{path}.value"),
                "must be empty with operator Exists: remove it, or use operator Equal".into(),
            )),
            Some(other) => v.push(violation(
                &format!("{path}.operator"),
                format!("must be Equal or Exists (got `{other}`)"),
            )),
        }
        if let Some(effect) = t.effect.as_deref()
            && !["", "NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect)
        {
            v.push(violation(
                &format!("{path}.effect"),
                format!(
                    "must be NoSchedule, PreferNoSchedule or NoExecute, or empty for all (got `{effect}`)"
                ),
            ));
        }
        if let Some(key) = t.key.as_deref().filter(|k| !k.is_empty())
            && let Err(e) = qualified_name(key)
        {
            v.push(violation(&format!("{path}.key"), e));
        }
    }
}

/// Label-syntax keys and values (`nodeSelector`, `labels`); `own` refuses
/// the keys atoll stamps itself.
fn check_labels(field: &str, labels: &BTreeMap<String, String>, own: bool, v: &mut Vec<Violation>) {
    for (key, value) in labels {
        let path = format!("{field}[{key}]");
        if let Err(e) = qualified_name(key) {
            v.push(violation(&path, e));
        } else if own && atolls(key) {
            v.push(violation(
                &path,
                format!(
                    "`{key}` is atoll's own label (atoll sets {GROUP}/* and {LABEL_MANAGED_BY}); choose another key"
                ),
            ));
        }
        if let Err(e) = label_value(value) {
            v.push(violation(&path, e));
        }
    }
}

fn check_annotations(annotations: &BTreeMap<String, String>, v: &mut Vec<Violation>) {
    let mut bytes = 0;
    for (key, value) in annotations {
        let path = format!("spec.pod.annotations[{key}]");
        bytes += key.len() + value.len();
        if let Err(e) = qualified_name(key) {
            v.push(violation(&path, e));
        } else if key.starts_with(&format!("{GROUP}/")) {
            v.push(violation(
                &path,
                format!(
                    "`{key}` is atoll's own annotation (atoll sets {GROUP}/*, such as the config checksum); choose another key"
                ),
            ));
        }
    }
    if bytes > MAX_ANNOTATION_BYTES {
        v.push(violation(
            "spec.pod.annotations",
            format!(
                "hold {bytes} bytes, more than the {MAX_ANNOTATION_BYTES} Kubernetes allows on an object; keep large data in a ConfigMap"
            ),
        ));
    }
}

fn check_resources(
    resources: &k8s_openapi::api::core::v1::ResourceRequirements,
    v: &mut Vec<Violation>,
) {
    let parse = |section: &str,
                 map: &Option<
        BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
                 v: &mut Vec<Violation>| {
        let mut values = BTreeMap::new();
        for (name, q) in map.iter().flatten() {
            match quantity::value(&q.0) {
                Ok(value) => {
                    values.insert(name.clone(), value);
                }
                Err(e) => v.push(violation(
                    &format!("spec.pod.resources.{section}[{name}]"),
                    e,
                )),
            }
        }
        values
    };
    let requests = parse("requests", &resources.requests, v);
    let limits = parse("limits", &resources.limits, v);
    for (name, request) in &requests {
        if let Some(limit) = limits.get(name)
            && request > limit
        {
            v.push(violation(
                &format!("spec.pod.resources.requests[{name}]"),
                format!("must not exceed limits[{name}]: raise the limit or lower the request"),
            ));
        }
    }
}

/// Keys atoll stamps on every object it manages.
fn atolls(key: &str) -> bool {
    key == LABEL_MANAGED_BY || key.starts_with(&format!("{GROUP}/"))
}

/// An environment variable name as the API server accepts it.
fn env_name(name: &str) -> Result<(), String> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || "-._".contains(c))
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not an environment variable name: use letters, digits, `_`, `-` and `.`, not starting with a digit, such as LOG_LEVEL"
        ))
    }
}

/// A label or annotation key: an optional DNS subdomain prefix and `/`, then
/// a name of at most 63 characters.
fn qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let bad = |why: String| {
        format!("`{key}` is not a valid key ({why}); use e.g. team or example.com/team")
    };
    if let Some(prefix) = prefix {
        dns_subdomain(prefix).map_err(|e| bad(format!("prefix: {e}")))?;
    }
    if name.is_empty() || name.len() > 63 || !name_chars(name) {
        return Err(bad(
            "the name must be 1 to 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit".into(),
        ));
    }
    Ok(())
}

/// A label value: empty, or at most 63 characters of the name syntax.
fn label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || (value.len() <= 63 && name_chars(value)) {
        Ok(())
    } else {
        Err(format!(
            "value `{value}` is not a label value: at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit"
        ))
    }
}

fn name_chars(s: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    alnum(s.chars().next())
        && alnum(s.chars().last())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// A DNS-1123 subdomain: lower-case labels of letters, digits and `-`
/// joined by dots, at most 253 characters.
fn dns_subdomain(s: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && l.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    if s.len() <= 253 && s.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!(
            "`{s}` is not a DNS subdomain: lower-case letters, digits, `-` and `.`, at most 253 characters"
        ))
    }
}

fn violation(field: &str, message: String) -> Violation {
    Violation {
        field: field.to_string(),
        message,
    }
}
