//! The `atoll` command: parse the command line, set up logging, run.

use anyhow::Result;
use clap::Parser;

use atoll::cli::{Cli, Cmd, PluginsCmd, diff, offline, plugin_new, plugin_test};
use atoll::operator::Operator;

/// jemalloc, returning freed memory to the system within about a second (a
/// background thread purges pages unused for 1 s). glibc's malloc kept what
/// compiling plugins and bursts of reconciles once used, per thread arena:
/// with 1,000 Databases atoll sat at 88–117 MiB with glibc and 65–77 MiB
/// with this (BENCHMARKS.md, "Memory").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main` (its `malloc_conf` global; the
/// symbol is prefixed because the allocator does not replace `malloc`).
/// One arena: atoll's threads are few and mostly wait on the network, and
/// the default (four per CPU) kept 3.5 MiB more over 1,000 Databases
/// (BENCHMARKS.md §8). `_RJEM_MALLOC_CONF` overrides any of these.
// Audited: a NUL-terminated byte string jemalloc only reads.
#[allow(unsafe_code)]
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_CONF: &[u8; 70] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0,narenas:1\0";

fn main() {
    let cli = Cli::parse();
    // The operator logs its work; one-shot commands only warn.
    let (json, default_level) = match &cli.cmd {
        Cmd::Run(args) => (args.log_json, "info"),
        _ => (false, "warn"),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_level.into());
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
    // `atoll diff` says with its exit code whether anything would change.
    let code = match cli.cmd {
        Cmd::Diff(args) => diff::diff(args).unwrap_or_else(|e| {
            eprintln!("error: {e:#}");
            diff::EXIT_ERROR
        }),
        cmd => match run(cmd) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e:#}");
                1
            }
        },
    };
    if code != 0 {
        std::process::exit(code);
    }
}

fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        // `main` runs it for its exit code.
        Cmd::Diff(_) => Ok(()),
        Cmd::Render(args) => offline::render(args),
        Cmd::Plugins(PluginsCmd::List(args)) => offline::list(args),
        Cmd::Plugins(PluginsCmd::Inspect { file, sandbox }) => offline::inspect(&file, sandbox),
        Cmd::Plugins(PluginsCmd::Push(args)) => atoll::cli::push::push(*args),
        Cmd::Plugins(PluginsCmd::Test(args)) => {
            if !plugin_test::run(args)? {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Plugins(PluginsCmd::New(args)) => plugin_new::run(args),
        Cmd::Crds => offline::crds(),
        Cmd::CompilePlugin { memory_bytes, job } => {
            let job = atoll::plugin::compile::Job::parse(&job).map_err(anyhow::Error::msg)?;
            atoll::plugin::compile::child_main(memory_bytes, job)
        }
        Cmd::Run(args) => tokio::runtime::Runtime::new()?.block_on(async {
            let operator = Operator::new(args.config()).await?;
            Ok(operator.run(shutdown_signal()).await?)
        }),
    }
}

/// Resolves on SIGINT or SIGTERM (what Kubernetes sends before killing a pod).
async fn shutdown_signal() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        tracing::warn!("cannot install a SIGTERM handler; stopping on SIGINT only");
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
