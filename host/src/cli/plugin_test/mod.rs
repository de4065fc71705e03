//! `atoll plugin test PATH`: run a plugin's golden cases (validate, render,
//! status) through the sandbox and output policy `atoll run` uses, print a
//! diff for every answer that differs, or with `--update` record the
//! plugin's answers as the new goldens.
//!
//! The case format, and the canonical JSON a rendered object's text must
//! equal byte for byte, are in `guest-sdk/vectors/README.md`.

pub mod canonical;
pub mod case;
pub mod diff;
pub mod source;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::api::DeletionPolicy;
use crate::plugin::LoadedPlugin;
use crate::policy::{OutputPolicy, Owner};
use case::Case;

/// `atoll plugin test`'s arguments.
#[derive(clap::Args)]
pub struct TestArgs {
    /// A plugin component (.wasm), or a plugin's source directory (built
    /// first: Cargo.toml → cargo, app.py → componentize-py, package.json →
    /// npm run build).
    pub path: PathBuf,
    /// Directory of golden cases (*.json); default: `vectors/` in the source
    /// directory, or next to the .wasm.
    #[arg(long, value_name = "DIR")]
    pub cases: Option<PathBuf>,
    /// Rewrite every case's expected answers with the plugin's (keeping the
    /// inputs); review the diff before committing.
    #[arg(long)]
    pub update: bool,
    /// What plugins may render (give it as `atoll run` is given it).
    #[command(flatten)]
    pub policy: super::PolicyArgs,
    #[command(flatten)]
    pub sandbox: super::SandboxArgs,
}

/// Run the cases; `Ok(true)` when every case passed (or was updated).
///
/// # Errors
/// The plugin does not build or load, or a case file is malformed.
pub fn run(args: TestArgs) -> Result<bool> {
    let (component, default_cases) = if args.path.is_dir() {
        (source::build(&args.path)?, args.path.join("vectors"))
    } else {
        let beside = args.path.parent().unwrap_or(Path::new(".")).join("vectors");
        (args.path.clone(), beside)
    };
    let cases_dir = args.cases.clone().unwrap_or(default_cases);
    let mut cases = case::load_dir(&cases_dir)?;

    let bytes = std::fs::read(&component)
        .with_context(|| format!("cannot read {}", component.display()))?;
    let runtime = args.sandbox.runtime()?;
    let started = Instant::now();
    let plugin = runtime.load(&component.display().to_string(), &bytes)?;
    let m = plugin.metadata();
    eprintln!(
        "# plugin {} {} from {} ({} bytes), loaded in {:.0?}; {} cases in {}",
        m.name,
        m.version,
        component.display(),
        bytes.len(),
        started.elapsed(),
        cases.len(),
        cases_dir.display()
    );

    let policy = args.policy.policy();
    let mut failed = 0;
    for case in &mut cases {
        let started = Instant::now();
        let failures = check(&plugin, &policy, case, args.update)?;
        let took = started.elapsed();
        if args.update {
            case::save(case)?;
            println!("updated {} ({took:.0?})", case.name);
        } else if failures.is_empty() {
            println!("ok      {} ({took:.0?})", case.name);
        } else {
            failed += 1;
            println!("FAILED  {} ({})", case.name, case.path.display());
            for failure in &failures {
                for line in failure.lines() {
                    println!("    {line}");
                }
            }
        }
    }
    if args.update {
        println!(
            "{} case files rewritten; review them with `git diff`",
            cases.len()
        );
        return Ok(true);
    }
    println!("{} passed, {failed} failed", cases.len() - failed);
    Ok(failed == 0)
}

/// Check one case, or with `update` record the answers in `case.doc`.
/// Returns a message per answer that differs.
fn check(
    plugin: &LoadedPlugin,
    policy: &OutputPolicy,
    case: &mut Case,
    update: bool,
) -> Result<Vec<String>> {
    let db = case.database.clone();
    // `failures`: answers that differ from the goldens; `errors`: calls that
    // gave no answer (trap, deadline, memory) or a render the policy refuses.
    let mut failures = Vec::new();
    let mut errors = Vec::new();

    let validate = match plugin.validate(&db) {
        Ok(Ok(())) => Value::Array(Vec::new()),
        Ok(Err(v)) => case::violations(&v),
        Err(e) => {
            errors.push(format!("validate: {e}"));
            Value::Null
        }
    };
    compare_value(
        "validate",
        case.doc.get("validate"),
        &validate,
        &mut failures,
    );

    let render = plugin.render(&db);
    let actual_render = match &render {
        Ok(answer) => case::render(answer),
        Err(e) => {
            errors.push(format!("render: {e}"));
            Value::Null
        }
    };
    if let Ok(Ok(rendered)) = &render {
        let owner = Owner {
            name: &db.name,
            namespace: &db.namespace,
            uid: if db.uid.is_empty() {
                "00000000-0000-0000-0000-000000000000"
            } else {
                &db.uid
            },
            plugin: &plugin.metadata().name,
            partitions: db.partitions,
            deletion: DeletionPolicy::default(),
        };
        if let Err(e) = policy.enforce(&owner, rendered) {
            errors.push(format!(
                "render: the output policy `atoll run` enforces refuses it: {e}"
            ));
        }
        compare_render(
            case.doc.get("render"),
            rendered,
            &actual_render,
            &mut failures,
        );
    } else if let Ok(Err(_)) = &render {
        compare_value(
            "render",
            case.doc.get("render"),
            &actual_render,
            &mut failures,
        );
    }

    // Observed objects come from the expected render, so a status case
    // tests status alone; when updating, from the render being recorded.
    let source = if update {
        Some(&actual_render)
    } else {
        case.doc.get("render")
    };
    let objects: Vec<Value> = source
        .and_then(|r| r.get("objects"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut statuses = match case.doc.get("status") {
        None => Vec::new(),
        Some(Value::Array(list)) => list.clone(),
        Some(_) => bail!("{}: `status` must be an array", case.path.display()),
    };
    for (i, status) in statuses.iter_mut().enumerate() {
        let observed = case::observed(status, &objects)
            .with_context(|| format!("{}: status[{i}]", case.path.display()))?;
        let actual = match plugin.status(&db, &observed) {
            Ok(report) => case::status(&report),
            Err(e) => {
                errors.push(format!("status[{i}]: {e}"));
                Value::Null
            }
        };
        let what = match status.get("description").and_then(Value::as_str) {
            Some(d) => format!("status[{i}] ({d})"),
            None => format!("status[{i}]"),
        };
        compare_value(&what, status.get("expect"), &actual, &mut failures);
        if update {
            status["expect"] = actual;
        }
    }

    if update {
        // A trap or a refused render is not an answer to record.
        if let Some(error) = errors.first() {
            bail!("{}: cannot update: {error}", case.path.display());
        }
        case.doc.insert("validate".into(), validate);
        case.doc.insert("render".into(), actual_render);
        case.doc.insert("status".into(), Value::Array(statuses));
        return Ok(Vec::new());
    }
    errors.extend(failures);
    Ok(errors)
}

fn compare_value(what: &str, expected: Option<&Value>, actual: &Value, failures: &mut Vec<String>) {
    let Some(expected) = expected else {
        failures.push(format!(
            "{what}: no expected answer in the case; run with --update to record the plugin's, then review it"
        ));
        return;
    };
    if expected != actual {
        failures.push(format!(
            "{what} differs (- expected, + actual):\n{}",
            diff::lines(&canonical::pretty(expected), &canonical::pretty(actual))
        ));
    }
}

/// Objects byte for byte against their canonical JSON, then the bindings.
fn compare_render(
    expected: Option<&Value>,
    rendered: &crate::contract::Rendered,
    actual: &Value,
    failures: &mut Vec<String>,
) {
    let Some(objects) = expected
        .and_then(|e| e.get("objects"))
        .and_then(Value::as_array)
    else {
        compare_value("render", expected, actual, failures);
        return;
    };
    let count = objects.len().max(rendered.objects.len());
    for i in 0..count {
        let want = objects.get(i);
        let got = rendered.objects.get(i);
        let label = |o: Option<&Value>| {
            o.map(|o| {
                format!(
                    "{} {}",
                    o["kind"].as_str().unwrap_or("?"),
                    o["metadata"]["name"].as_str().unwrap_or("?")
                )
            })
            .unwrap_or_else(|| "nothing".into())
        };
        let parsed: Option<Value> =
            got.map(|t| serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.clone())));
        match (want, got) {
            (Some(want), Some(text)) => {
                let canonical = canonical::compact(want);
                if &canonical == text {
                    continue;
                }
                let parsed = parsed.unwrap_or(Value::Null);
                if &parsed == want {
                    let at = canonical
                        .bytes()
                        .zip(text.bytes())
                        .take_while(|(a, b)| a == b)
                        .count();
                    let show = |s: &str| {
                        s.get(at.saturating_sub(20)..(at + 40).min(s.len()))
                            .unwrap_or(s)
                            .to_string()
                    };
                    failures.push(format!(
                        "render object {i} ({}): the same object, other bytes (key order, spacing or escapes) from byte {at}:\n  expected …{}…\n  actual   …{}…",
                        label(Some(want)),
                        show(&canonical),
                        show(text)
                    ));
                } else {
                    failures.push(format!(
                        "render object {i} ({}) differs (- expected, + actual):\n{}",
                        label(Some(want)),
                        diff::lines(&canonical::pretty(want), &canonical::pretty(&parsed))
                    ));
                }
            }
            (Some(want), None) => failures.push(format!(
                "render object {i}: expected {}, the plugin rendered nothing more",
                label(Some(want))
            )),
            (None, Some(_)) => failures.push(format!(
                "render object {i}: {} is not expected",
                label(parsed.as_ref())
            )),
            (None, None) => {}
        }
    }
    let expected_bindings = expected.and_then(|e| e.get("partitions"));
    compare_value(
        "render partitions",
        expected_bindings,
        &actual["partitions"],
        failures,
    );
}

#[cfg(test)]
mod tests {
    use super::compare_render;
    use crate::contract::Rendered;
    use serde_json::json;

    #[test]
    fn the_same_object_in_other_bytes_fails_and_says_where() {
        let expected = json!({"objects": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "1"}}], "partitions": []});
        let rendered = |text: &str| Rendered {
            objects: vec![text.to_string()],
            partitions: Vec::new(),
        };
        let actual = json!({"partitions": []});
        let mut failures = Vec::new();
        let canonical =
            r#"{"apiVersion":"v1","kind":"ConfigMap","data":{"a":"1"},"metadata":{"name":"x"}}"#;
        compare_render(
            Some(&expected),
            &rendered(canonical),
            &actual,
            &mut failures,
        );
        assert!(failures.is_empty(), "{failures:?}");

        // Keys sorted plainly (kind after data): the same value, other bytes.
        let sorted =
            r#"{"apiVersion":"v1","data":{"a":"1"},"kind":"ConfigMap","metadata":{"name":"x"}}"#;
        compare_render(Some(&expected), &rendered(sorted), &actual, &mut failures);
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(
            failures[0].contains("the same object, other bytes"),
            "{}",
            failures[0]
        );
        assert!(failures[0].contains("from byte 20"), "{}", failures[0]);
    }
}
