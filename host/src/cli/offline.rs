//! The commands that need no cluster: `render`, `plugins list`, `plugins
//! inspect` and `crds` (and what `diff` shares with them).

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};
use kube::ResourceExt;

use super::{Format, PluginArgs, RenderArgs, SandboxArgs};
use crate::api::Database;
use crate::render::Renderer;

/// A uid for offline renders, so owner references are complete; the
/// operator uses the Database's real uid.
pub(crate) const OFFLINE_UID: &str = "00000000-0000-0000-0000-000000000000";

/// `atoll render`: print what atoll would apply for Database manifests.
///
/// # Errors
/// A file cannot be read, a manifest is invalid, or a render fails.
pub fn render(args: RenderArgs) -> Result<()> {
    let databases = read_databases(&args.files)?;
    let policy = args.policy.policy();
    let renderer = Renderer {
        registry: args.plugins.config().registry()?,
        policy,
        cluster_domain: args.cluster_domain,
    };

    let mut objects = Vec::new();
    for (origin, db) in &databases {
        let id = format!("{}/{}", db.namespace().unwrap_or_default(), db.name_any());
        let desired = renderer
            .render(db)
            .with_context(|| format!("{origin}: Database {id}"))?;
        eprintln!(
            "# Database {id}: plugin {} {}, {} objects, {} partitions",
            desired.plugin.name,
            desired.plugin.version,
            desired.objects.len(),
            desired.partitions.len()
        );
        for partition in renderer.partition_objects(db, &desired) {
            objects.push(serde_json::to_value(partition)?);
        }
        objects.extend(desired.objects);
    }

    emit(&match args.output {
        Format::Json => serde_json::to_string_pretty(&objects)? + "\n",
        Format::Yaml => yaml_documents(&objects)?,
    })
}

pub(crate) fn yaml_documents(objects: &[serde_json::Value]) -> Result<String> {
    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(object)?);
    }
    Ok(out)
}

/// Every Database in `files` (`-` is standard input), each with the file
/// it came from, an offline uid filled in where the manifest has none.
///
/// # Errors
/// A file cannot be read or holds something other than valid Databases.
pub(crate) fn read_databases(files: &[String]) -> Result<Vec<(String, Database)>> {
    let mut databases = Vec::new();
    for file in files {
        let text = if file == "-" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading standard input")?;
            s
        } else {
            std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?
        };
        let origin = if file == "-" {
            "<stdin>"
        } else {
            file.as_str()
        };
        for mut db in crate::manifest::parse_databases(origin, &text)? {
            db.metadata.uid.get_or_insert_with(|| OFFLINE_UID.into());
            databases.push((origin.to_string(), db));
        }
    }
    Ok(databases)
}

/// Write to stdout; a closed pipe (`atoll render ... | head`) is not an error.
pub(crate) fn emit(text: &str) -> Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// `atoll plugins list`.
///
/// # Errors
/// A plugin does not load.
pub fn list(args: PluginArgs) -> Result<()> {
    let registry = args.config().registry()?;
    println!(
        "{:<16} {:<9} {:>9}  {:<20} SOURCE",
        "NAME", "VERSION", "SIZE", "DIGEST"
    );
    for entry in registry.entries() {
        let p = &entry.plugin;
        let digest = p.digest().to_string();
        println!(
            "{:<16} {:<9} {:>9}  {:<20} {}",
            p.metadata().name,
            p.metadata().version,
            p.size(),
            &digest[..digest.len().min(19)],
            entry.source
        );
    }
    Ok(())
}

/// `atoll plugins inspect`.
///
/// # Errors
/// The file cannot be read or is not a plugin.
pub fn inspect(file: &Path, sandbox: SandboxArgs) -> Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let plugin = sandbox
        .runtime()?
        .load(&file.display().to_string(), &bytes)?;
    let m = plugin.metadata();
    let Ok(schema) = serde_json::from_str::<serde_json::Value>(&m.config_schema) else {
        bail!("{}: config schema is not JSON", file.display());
    };
    let info = serde_json::json!({
        "name": m.name,
        "version": m.version,
        "description": m.description,
        "digest": plugin.digest().to_string(),
        "size": plugin.size(),
        "configSchema": schema,
    });
    println!("{}", serde_json::to_string_pretty(&info)?);
    Ok(())
}

/// `atoll crds`.
///
/// # Errors
/// Writing to standard output failed.
pub fn crds() -> Result<()> {
    let crds: Vec<serde_json::Value> = crate::api::crds()
        .into_iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()?;
    emit(&yaml_documents(&crds)?)
}
