//! Bounds on everything a plugin hands the host: metadata strings, the
//! config schema, messages that end up in status, and rendered JSON.
//!
//! A plugin's results are copied out of its linear memory (so each is at most
//! the per-call memory cap) and judged here before the host keeps them or
//! parses them. What goes into a Database's status is cut to
//! [`MESSAGE_BYTES`]; the whole text goes to the log, once, where it is cut.
//! A document the host parses (the schema, rendered objects) is measured
//! first: size, nesting depth and number of JSON values, so parsing cannot
//! cost more than a small multiple of the bound.

use crate::contract::{Metadata, PluginRenderError, StatusReport, Violation};

/// Most bytes of a plugin's description.
pub const DESCRIPTION_BYTES: usize = 4 << 10;
/// Most bytes of a plugin's version string (semantic versioning).
pub const VERSION_BYTES: usize = 128;
/// Most bytes of a plugin's config schema (JSON Schema). The largest
/// built-in schema is under 8 KiB.
pub const SCHEMA_BYTES: usize = 256 << 10;
/// Deepest nesting of arrays and objects in the config schema (serde_json
/// would stop at 128 on its own; stated here so it is a bound, not an
/// accident).
pub const SCHEMA_DEPTH: usize = 64;
/// Most bytes of plugin-supplied text kept in a status message (render
/// failure, status message, each violation, trap output).
pub const MESSAGE_BYTES: usize = 1 << 10;
/// Most violations of one `validate`/`render` kept; more are counted.
pub const VIOLATIONS: usize = 32;
/// Most bytes one call may log through the `log` import.
pub const LOG_BYTES_PER_CALL: usize = 64 << 10;
/// Deepest nesting of one rendered object. Kubernetes objects nest about 15
/// deep (a StatefulSet's probe handlers).
pub const RENDER_DEPTH: usize = 64;
/// Most bytes of one rendered object: the API server refuses objects much
/// over 1.5 MiB (etcd's request limit) anyway.
pub const OBJECT_BYTES: usize = 1536 << 10;
/// Most JSON values (scalars, arrays, objects, keys) in one render, all
/// objects together. A parsed value costs 32-100 bytes, so this bounds the
/// parsed render to tens of MiB; raft at 1,024 partitions and 1,024
/// clusters renders about 330,000.
pub const RENDER_VALUES: usize = 2_000_000;

/// What a JSON text holds, found by one scan without parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Deepest nesting of arrays and objects.
    pub depth: usize,
    /// Upper bound of the values in it (scalars, arrays, objects and keys):
    /// a container of n children has at least n - 1 commas, and an object's
    /// keys are one per colon, so 1 + containers + commas + colons.
    pub values: usize,
}

/// Scan `text` for its [`Shape`]. Works on any text: malformed JSON is left
/// for the parser to reject; the scan only bounds what parsing could cost.
///
/// Strings are most of a Kubernetes object's bytes, so the scan jumps
/// through them to the next quote or backslash (`memchr2`, vectorised)
/// instead of looking at every byte: it runs on every render, before the
/// host parses a byte of it.
pub fn shape(text: &str) -> Shape {
    let bytes = text.as_bytes();
    let (mut depth, mut deepest, mut values) = (0usize, 0usize, 1usize);
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        i += 1;
        match b {
            b'"' => i = string_end(bytes, i),
            b'[' | b'{' => {
                values += 1;
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' | b':' => values += 1,
            _ => {}
        }
    }
    Shape {
        depth: deepest,
        values,
    }
}

/// Where the string whose body starts at `i` ends: just past its closing
/// quote, or the end of `bytes` for an unterminated string. A backslash
/// escapes the byte after it.
fn string_end(bytes: &[u8], mut i: usize) -> usize {
    loop {
        let rest = bytes.get(i..).unwrap_or_default();
        match memchr::memchr2(b'"', b'\\', rest) {
            Some(j) if rest[j] == b'"' => return i + j + 1,
            Some(j) => i += j + 2,
            None => return bytes.len(),
        }
    }
}

/// Check the sizes of plugin-supplied metadata.
///
/// # Errors
/// Why it is unusable, naming the field and the limit.
pub fn check_metadata_sizes(m: &Metadata) -> Result<(), String> {
    let over = |field: &str, bytes: usize, max: usize| {
        Err(format!(
            "{field} is {bytes} bytes; at most {max} are allowed"
        ))
    };
    if m.description.len() > DESCRIPTION_BYTES {
        return over("description", m.description.len(), DESCRIPTION_BYTES);
    }
    if m.version.len() > VERSION_BYTES {
        return over("version", m.version.len(), VERSION_BYTES);
    }
    if m.config_schema.len() > SCHEMA_BYTES {
        return over("config schema", m.config_schema.len(), SCHEMA_BYTES);
    }
    let depth = shape(&m.config_schema).depth;
    if depth > SCHEMA_DEPTH {
        return Err(format!(
            "config schema nests {depth} levels deep; at most {SCHEMA_DEPTH} are allowed"
        ));
    }
    Ok(())
}

/// Check rendered objects before any of them is parsed.
///
/// # Errors
/// Why they are too large or too deep to parse, naming the limit.
pub fn check_render_shape(objects: &[String]) -> Result<(), String> {
    let mut values = 0usize;
    for (index, text) in objects.iter().enumerate() {
        if text.len() > OBJECT_BYTES {
            return Err(format!(
                "object #{index} is {} bytes; at most {OBJECT_BYTES} are allowed per object",
                text.len()
            ));
        }
        let shape = shape(text);
        if shape.depth > RENDER_DEPTH {
            return Err(format!(
                "object #{index} nests {} levels deep; at most {RENDER_DEPTH} are allowed",
                shape.depth
            ));
        }
        values = values.saturating_add(shape.values);
    }
    if values > RENDER_VALUES {
        return Err(format!(
            "the objects hold about {values} JSON values; at most {RENDER_VALUES} are allowed per render"
        ));
    }
    Ok(())
}

/// `text` cut to `max` bytes on a character boundary, marked with `…` and
/// how much was cut. The whole text is logged once when it is cut.
pub fn cut(plugin: &str, what: &str, text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    tracing::warn!(
        plugin,
        what,
        bytes = text.len(),
        "plugin text over {max} bytes, cut in status; whole text: {}",
        super::configmap::truncate(text.clone(), LOG_BYTES_PER_CALL)
    );
    let total = text.len();
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… ({} more bytes in atoll's log)",
        &text[..end],
        total - end
    )
}

/// Violations with each field and message cut, at most [`VIOLATIONS`].
pub fn cut_violations(plugin: &str, mut v: Vec<Violation>) -> Vec<Violation> {
    let extra = v.len().saturating_sub(VIOLATIONS);
    v.truncate(VIOLATIONS);
    let mut v: Vec<Violation> = v
        .into_iter()
        .map(|v| Violation {
            field: cut(plugin, "violation field", v.field, 256),
            message: cut(plugin, "violation message", v.message, MESSAGE_BYTES),
        })
        .collect();
    if extra > 0 {
        v.push(Violation {
            field: String::new(),
            message: format!("and {extra} more violations"),
        });
    }
    v
}

/// A render error with its plugin-supplied text bounded.
pub fn cut_render_error(plugin: &str, e: PluginRenderError) -> PluginRenderError {
    match e {
        PluginRenderError::Invalid(v) => PluginRenderError::Invalid(cut_violations(plugin, v)),
        PluginRenderError::Failed(m) => {
            PluginRenderError::Failed(cut(plugin, "render error", m, MESSAGE_BYTES))
        }
    }
}

/// A status report with its message bounded.
pub fn cut_status(plugin: &str, mut r: StatusReport) -> StatusReport {
    r.message = cut(plugin, "status message", r.message, MESSAGE_BYTES);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_counts_depth_and_values_outside_strings() {
        assert_eq!(
            shape("{}"),
            Shape {
                depth: 1,
                values: 2
            }
        );
        assert_eq!(
            shape(r#"{"a":[1,2,{"b":"[[[,,,"}]}"#),
            Shape {
                depth: 3,
                values: 8
            }
        );
        assert_eq!(
            shape(r#"["\"[",1]"#),
            Shape {
                depth: 1,
                values: 3
            }
        );
        assert_eq!(shape(&"[".repeat(1000)).depth, 1000);
    }

    /// The plain definition: every byte looked at, a flag for "inside a
    /// string" and one for "after a backslash".
    fn shape_byte_by_byte(text: &str) -> Shape {
        let (mut depth, mut deepest, mut values) = (0usize, 0usize, 1usize);
        let (mut in_string, mut escaped) = (false, false);
        for b in text.bytes() {
            if in_string {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    values += 1;
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                b',' | b':' => values += 1,
                _ => {}
            }
        }
        Shape {
            depth: deepest,
            values,
        }
    }

    #[test]
    fn the_fast_scan_agrees_with_the_byte_by_byte_definition() {
        let edges = [
            "",
            "\"",
            "\"\\",
            "\"\\\"",
            r#""\\"[1]"#,
            r#""\\\"[" ,1]"#,
            r#"{"a\"b":"c\\","d":["é\u00e9,"]}"#,
            "[\"unterminated, {",
        ];
        for text in edges {
            assert_eq!(shape(text), shape_byte_by_byte(text), "{text:?}");
        }
        // Pseudo-random texts over the bytes that matter (fixed seed).
        let alphabet = br#"[]{},:"\ab"#;
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for len in 0..400 {
            let text: String = (0..len % 60)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    alphabet[(seed % alphabet.len() as u64) as usize] as char
                })
                .collect();
            assert_eq!(shape(&text), shape_byte_by_byte(&text), "{text:?}");
        }
    }

    #[test]
    fn the_scan_bounds_what_serde_json_parses() {
        // An upper bound: serde_json's own count of values never exceeds it.
        fn count(v: &serde_json::Value) -> usize {
            match v {
                serde_json::Value::Array(a) => 1 + a.iter().map(count).sum::<usize>(),
                serde_json::Value::Object(o) => 1 + o.values().map(|v| 1 + count(v)).sum::<usize>(),
                _ => 1,
            }
        }
        for text in [
            r#"{"a":[1,2,{"b":"x"}],"c":{"d":null,"e":[[],[],{}]}}"#,
            "[0,0,0,0,0,0]",
            r#"{"k":"v","k2":"v"}"#,
        ] {
            let parsed: serde_json::Value = serde_json::from_str(text).unwrap();
            assert!(count(&parsed) <= shape(text).values, "{text}");
        }
    }

    #[test]
    fn cut_keeps_char_boundaries_and_says_how_much_was_cut() {
        let text = "é".repeat(1000);
        let cut = cut("p", "test", text, 5);
        assert_eq!(cut, "éé… (1996 more bytes in atoll's log)");
    }

    #[test]
    fn deep_and_large_renders_are_refused_before_parsing() {
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        let err = check_render_shape(&[deep]).unwrap_err();
        assert!(
            err.contains("100 levels deep") && err.contains("at most 64"),
            "{err}"
        );
        let big = "x".repeat(OBJECT_BYTES + 1);
        assert!(
            check_render_shape(&[big])
                .unwrap_err()
                .contains("per object")
        );
        // 1 MiB of zeros is 512 Ki values; four such objects are too many.
        let zeros = format!("[{}0]", "0,".repeat(512 << 10));
        let err = check_render_shape(&vec![zeros; 4]).unwrap_err();
        assert!(err.contains("JSON values"), "{err}");
    }
}
