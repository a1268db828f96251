//! `amo-storage [ADDR] [--config FILE]`: runs the service.
//! `amo-storage openapi`: prints the OpenAPI spec.
//! `amo-storage settings-table`: prints the settings table of
//! docs/configuration.md.
//! `amo-storage key …`, `amo-storage parcel …`: the command-line client
//! (`amo_storage::cli`).

use std::{path::PathBuf, process::ExitCode};

use amo_storage::{app, cli, config::Settings, telemetry};
use clap::{Parser, Subcommand};

/// The AMO storage service.
#[derive(Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    /// Address to listen on.
    #[arg(default_value = "127.0.0.1:8080")]
    addr: String,
    /// A TOML settings file; `AMO_*` variables override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the OpenAPI spec the code describes.
    Openapi,
    /// Print the table of every setting, its meaning and its default (the
    /// table of docs/configuration.md).
    SettingsTable,
    /// Account keys: create one, show its address.
    #[command(subcommand)]
    Key(cli::KeyCommand),
    /// Upload, download, inspect and remove parcels on a running service.
    #[command(subcommand)]
    Parcel(cli::ParcelCommand),
}

/// glibc raises its mmap threshold each time a large block is freed, up to
/// 32 MiB, after which the 8 MiB part buffers come from the heap and are not
/// given back: peak RSS then grows with parcel size and concurrency. A fixed
/// threshold keeps every part buffer in its own mapping, returned on free.
/// Measured by benches/streaming.rs: 1 GiB parcel 76 → 20 MiB, 8 concurrent
/// 128 MiB uploads 253 → 143 MiB.
///
/// Fixing the mmap threshold also fixes the trim threshold at its default,
/// 128 KiB: every free that leaves more than that at the top of an arena
/// gives it back to the kernel, and the next socket read faults it in again
/// (page faults and page zeroing were ~10 % of a streamed upload's CPU).
/// [`TRIM_THRESHOLD`] keeps that much: measured with `perf` and
/// bench/streaming.sh (docs/performance.md, issue 30).
///
/// The crate's one `unsafe` (`unsafe_code` is denied in Cargo.toml): no safe
/// crate wraps `mallopt`.
#[allow(unsafe_code)]
fn keep_large_buffers_out_of_the_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes no pointer and only changes glibc's allocator
    // tuning; it is called first thing in `main`, before the runtime (or any
    // other thread) exists, so no allocation races with the change.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// What glibc keeps at the top of an arena rather than give back at once:
/// a few of the reads a streamed body moves through (hyper reads up to
/// ~400 KiB at a time).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 4 << 20;

fn main() -> ExitCode {
    keep_large_buffers_out_of_the_heap();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime")
        .block_on(run())
}

async fn run() -> ExitCode {
    let args = Cli::parse();
    match args.command {
        None => {}
        Some(Command::Openapi) => {
            println!("{}", app::openapi_spec());
            return ExitCode::SUCCESS;
        }
        Some(Command::SettingsTable) => {
            print!("{}", amo_storage::config::table());
            return ExitCode::SUCCESS;
        }
        Some(Command::Key(command)) => return cli::run_key(command),
        Some(Command::Parcel(command)) => return cli::run_parcel(command).await,
    }
    let (settings, warnings) = match Settings::load(args.config.as_deref()) {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("amo-storage: {err}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&settings.log, settings.log_format);
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    if let Err(err) = app::check_store_at_start(&settings).await {
        tracing::error!(%err, "amo-storage cannot start");
        return ExitCode::from(1);
    }
    let app = match app::App::bind(settings, &args.addr).await {
        Ok(app) => app,
        Err(err) => {
            eprintln!("amo-storage: cannot listen on {}: {err}", args.addr);
            return ExitCode::from(1);
        }
    };
    if let Err(refusal) = app.check_state().await {
        tracing::error!("refusing to start: {refusal}");
        return ExitCode::from(2);
    }
    tracing::info!(addr = %app.local_addr(), "amo-storage listening");
    let served = app.run_until(shutdown_signal()).await;
    // The requests cut at the drain timeout end their detached work (a
    // token's claim given back) before the process exits.
    if !amo_storage::tasks::finish_detached(FINISH_DETACHED).await {
        tracing::warn!(
            "work of cut requests still running at exit; their claims lapse by themselves"
        );
    }
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(%err, "server failed");
            ExitCode::from(1)
        }
    }
}

/// How long the process waits, after the server stopped, for the work of
/// requests cut at the drain timeout (a Redis call or two each).
const FINISH_DETACHED: std::time::Duration = std::time::Duration::from_secs(5);

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = interrupt => {},
            _ = terminate.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down: draining in-flight requests");
}
