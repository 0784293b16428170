//! Wiring for `weft-server`'s subcommands: load through the real host, print, pick the exit code.

use std::io::Write;
use std::process::ExitCode;

use weft_config::{ServerFlags, System, load_server};

/// `weft-server validate`: prints the effective configuration, or every error.
pub(crate) fn validate(flags: &ServerFlags) -> anyhow::Result<ExitCode> {
    let loaded = load_server(&flags.0, System::os());
    let report = loaded.report(|config| config.to_json());
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
pub(crate) fn write_stderr(lines: &[String]) {
    let mut err = std::io::stderr().lock();
    for line in lines {
        let _ = writeln!(err, "{line}");
    }
}
