//! `spec.storage.config`: parsed with serde, described with schemars.

use crate::{Database, Violation};

/// Parse a Database's config into `C`, naming the offending field on error.
///
/// Absent or `null` config parses as `{}`, so a config type whose fields all
/// have defaults accepts a Database that sets no config at all.
///
/// # Errors
/// The config does not decode into `C`; the violation names the field.
pub fn parse_config<C: serde::de::DeserializeOwned>(db: &Database) -> Result<C, Violation> {
    let text = match db.config.trim() {
        "" | "null" => "{}",
        other => other,
    };
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let path = if path == "." { String::new() } else { path };
        Violation::config(&path, strip_position(&err.into_inner().to_string()))
    })
}

/// The JSON Schema of `C`, as JSON text.
pub fn config_schema<C: schemars::JsonSchema>() -> String {
    serde_json::to_string(&schemars::schema_for!(C)).expect("a schema always serializes")
}

/// serde_json appends "at line 1 column 17", which means nothing to someone
/// who wrote YAML.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, Default)]
    #[serde(deny_unknown_fields, rename_all = "camelCase", default)]
    struct Cfg {
        replicas: u32,
        storage: Storage,
    }

    #[derive(serde::Deserialize, Debug, Default)]
    #[serde(deny_unknown_fields, rename_all = "camelCase", default)]
    struct Storage {
        size: String,
    }

    #[test]
    fn empty_and_null_config_use_defaults() {
        for raw in ["", "null", "{}"] {
            let mut db = Database::new("db", 1);
            db.config = raw.into();
            let cfg: Cfg = parse_config(&db).unwrap();
            assert_eq!(cfg.replicas, 0);
        }
    }

    #[test]
    fn type_errors_name_the_nested_field() {
        let db = Database::new("db", 1).with_config(serde_json::json!({"storage": {"size": 3}}));
        let v = parse_config::<Cfg>(&db).unwrap_err();
        assert_eq!(v.field, "spec.storage.config.storage.size");
        assert!(v.message.contains("expected a string"), "{}", v.message);
        assert!(!v.message.contains("line"), "{}", v.message);
    }

    #[test]
    fn unknown_fields_are_named() {
        let db = Database::new("db", 1).with_config(serde_json::json!({"replica": 3}));
        let v = parse_config::<Cfg>(&db).unwrap_err();
        assert!(v.message.contains("unknown field `replica`"), "{v}");
        assert!(
            v.message.contains("replicas"),
            "suggests the real fields: {v}"
        );
    }
}
