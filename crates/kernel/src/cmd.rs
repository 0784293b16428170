//! The one place weft-kernel starts external programs (`nft`, `iptables`, `iptables-restore`,
//! and `ip` in the test harness).
//!
//! A child runs in the network namespace of the thread that starts it, so callers run these on
//! a thread of the runtime that was built inside the namespace they mean.

use std::io::Write as _;
use std::process::{Child, Command, Output, Stdio};

use crate::KernelError;

/// A command line: program, arguments, optional stdin and extra environment.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cmd {
    program: String,
    args: Vec<String>,
    stdin: Option<String>,
    env: Vec<(String, String)>,
}

// === impl Cmd ===

impl Cmd {
    pub(crate) fn new(program: impl Into<String>) -> Cmd {
        Cmd {
            program: program.into(),
            ..Cmd::default()
        }
    }

    pub(crate) fn arg(mut self, arg: impl Into<String>) -> Cmd {
        self.args.push(arg.into());
        self
    }

    pub(crate) fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Feeds `input` on stdin (a script for `nft -f -` or `iptables-restore`).
    pub(crate) fn stdin(mut self, input: impl Into<String>) -> Cmd {
        self.stdin = Some(input.into());
        self
    }

    /// Sets an environment variable for the child only.
    #[cfg_attr(not(feature = "test-util"), allow(dead_code))]
    pub(crate) fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Cmd {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The command line, for error messages.
    pub(crate) fn line(&self) -> String {
        std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs to completion and returns its output, whatever the exit status.
    pub(crate) fn output(&self) -> Result<Output, KernelError> {
        let mut child = self.start(true)?;
        if let Some(input) = &self.stdin
            && let Some(mut pipe) = child.stdin.take()
        {
            // A child that exits early closes the pipe; its exit status tells why.
            let _ = pipe.write_all(input.as_bytes());
        }
        child.wait_with_output().map_err(|e| KernelError::Spawn {
            program: self.program.clone(),
            kind: e.kind(),
        })
    }

    /// Runs to completion and returns stdout; a failed exit is [`KernelError::Command`].
    pub(crate) fn run(&self) -> Result<String, KernelError> {
        let out = self.output()?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(self.failure(&out))
        }
    }

    /// The error for a failed `out`.
    pub(crate) fn failure(&self, out: &Output) -> KernelError {
        KernelError::Command {
            command: self.line(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        }
    }

    /// Starts the command in the background with stdout and stderr piped.
    #[cfg_attr(not(feature = "test-util"), allow(dead_code))]
    pub(crate) fn spawn(&self) -> Result<Child, KernelError> {
        self.start(false)
    }

    #[allow(
        clippy::disallowed_methods,
        reason = "this is weft-kernel's one command wrapper"
    )]
    fn start(&self, piped_stdin: bool) -> Result<Child, KernelError> {
        Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(if piped_stdin && self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| KernelError::Spawn {
                program: self.program.clone(),
                kind: e.kind(),
            })
    }
}

/// Runs `cmd` on tokio's blocking pool (a thread in the caller's network namespace).
pub(crate) async fn run_blocking<T, F>(f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}
