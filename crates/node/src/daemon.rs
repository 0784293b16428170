//! What both daemons do the same way: logging, the runtime, the open-files limit, and waiting
//! for a stop signal, after which a daemon exits within [`STOP_DEADLINE`] whatever its tasks
//! are doing.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use weft_config::{LogFormat, Report};

/// Logs to stderr as text or JSON lines (`--log-format`); `RUST_LOG` refines the level
/// (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// A multi-threaded tokio runtime.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// How long a daemon may take to stop after the stop signal: then it exits at once, abandoning
/// whatever is still running (a store or server that does not answer, a stuck task). The pod
/// network stays in place either way.
pub const STOP_DEADLINE: Duration = Duration::from_millis(4500);

/// Resolves on SIGTERM or Ctrl-C (SIGINT), and from then on the process exits within
/// [`STOP_DEADLINE`], cleanly or not.
pub async fn shutdown_signal() {
    wait_for_signal().await;
    exit_after(STOP_DEADLINE);
}

/// Exits the process `deadline` from now unless it exited before; a thread of its own, so
/// nothing the runtime does can hold it up. Armed once.
fn exit_after(deadline: Duration) {
    static ARMED: AtomicBool = AtomicBool::new(false);
    if ARMED.swap(true, Ordering::SeqCst) {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("stop-deadline".to_owned())
        .spawn(move || {
            std::thread::sleep(deadline);
            tracing::warn!(
                deadline_ms = deadline.as_millis(),
                "still stopping after the stop deadline; exiting now and abandoning what is left"
            );
            std::process::exit(0);
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "could not start the stop deadline's thread");
    }
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the soft limit in effect.
///
/// A server holds one connection per agent (lease watches, later tunnels), and Linux's
/// default soft limit of 1,024 stops it near a thousand agents; the hard limit is what the
/// administrator allows (systemd's `LimitNOFILE`). Safe: weft uses no `select(2)`, whose
/// descriptor sets stop at 1,024.
pub fn raise_nofile_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!(soft, hard, error = %e, "could not raise the open-files limit");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the open-files limit");
            0
        }
    }
}

/// Prints a `validate` report: the JSON on stdout, warnings and errors on stderr; exit 0 when
/// valid, 1 otherwise.
pub fn print_report(report: &Report) -> std::io::Result<ExitCode> {
    write_stderr(&report.stderr);
    if let Some(json) = &report.stdout {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{json}")?;
        out.flush()?;
    }
    Ok(if report.valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Writes lines to stderr; a closed stderr is ignored, as there is nowhere left to report it.
pub fn write_stderr(lines: &[String]) {
    let mut err = std::io::stderr().lock();
    for line in lines {
        let _ = writeln!(err, "{line}");
    }
}

/// Writes an error to stderr as one `error: ` line per line of `text` (a daemon's failure, which
/// may name several problems).
pub fn write_errors(text: &str) {
    write_stderr(
        &text
            .lines()
            .map(|line| format!("error: {line}"))
            .collect::<Vec<_>>(),
    );
}
