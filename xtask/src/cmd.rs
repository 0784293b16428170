//! The one place xtask spawns processes.
//!
//! `clippy.toml` disallows `std::process::Command::new` so that every external command goes
//! through a wrapper that prints what it runs and names the command in its errors.

use std::env;
use std::ffi::OsStr;
use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};

use anyhow::{Context, bail};

/// A command to run, with its program and arguments kept for messages.
pub(crate) struct Cmd {
    inner: Command,
    shown: String,
}

/// Starts building `program` run in `dir`.
pub(crate) fn cmd(dir: &Path, program: impl AsRef<OsStr>) -> Cmd {
    let program = program.as_ref();
    #[allow(
        clippy::disallowed_methods,
        reason = "this is xtask's one process wrapper"
    )]
    let mut inner = Command::new(program);
    inner.current_dir(dir);
    Cmd {
        inner,
        shown: program.to_string_lossy().into_owned(),
    }
}

/// `cargo` in `dir`: the cargo that started us when there is one (`cargo run` and `cargo test`
/// set `CARGO`), so every step uses one toolchain.
pub(crate) fn cargo(dir: &Path) -> Cmd {
    cmd(dir, env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

// === impl Cmd ===

impl Cmd {
    /// Adds one argument.
    pub(crate) fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        let arg = arg.as_ref();
        self.shown.push(' ');
        self.shown.push_str(&arg.to_string_lossy());
        self.inner.arg(arg);
        self
    }

    /// Adds several arguments.
    pub(crate) fn args<I>(self, args: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<OsStr>,
    {
        args.into_iter().fold(self, Cmd::arg)
    }

    /// Sets an environment variable for the child only.
    pub(crate) fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.inner.env(key, value);
        self
    }

    /// Runs with inherited stdio and returns how the child exited.
    pub(crate) fn status(mut self) -> anyhow::Result<ExitStatus> {
        self.inner
            .status()
            .with_context(|| format!("could not start `{self}`"))
    }

    /// Runs with no output at all and says whether the child exited with success.
    pub(crate) fn succeeds(mut self) -> bool {
        self.inner
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    /// Runs with inherited stdio; a non-zero exit is an error.
    pub(crate) fn run(self) -> anyhow::Result<()> {
        let shown = self.shown.clone();
        let status = self.status()?;
        if !status.success() {
            bail!("`{shown}` failed: {status}");
        }
        Ok(())
    }

    /// Runs and returns stdout; stderr goes to the terminal. A non-zero exit is an error.
    pub(crate) fn read(mut self) -> anyhow::Result<String> {
        let output = self
            .inner
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("could not start `{self}`"))?;
        if !output.status.success() {
            bail!("`{self}` failed: {}", output.status);
        }
        String::from_utf8(output.stdout).with_context(|| format!("`{self}` printed non-UTF-8"))
    }

    /// Runs to the end and returns its stdout, stderr and exit status, whatever the status; `stdin`
    /// is written to the child's standard input (`/dev/null` when `None`).
    pub(crate) fn output(mut self, stdin: Option<&[u8]>) -> anyhow::Result<Output> {
        let input = match stdin {
            Some(_) => Stdio::piped(),
            None => Stdio::null(),
        };
        let mut child = self
            .inner
            .stdin(input)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("could not start `{self}`"))?;
        // Written from a thread of its own, so a child that prints before it has read all of
        // its input cannot deadlock against us.
        let writer = match (stdin, child.stdin.take()) {
            (Some(bytes), Some(mut pipe)) => {
                let bytes = bytes.to_vec();
                Some(std::thread::spawn(move || pipe.write_all(&bytes)))
            }
            _ => None,
        };
        let output = child
            .wait_with_output()
            .with_context(|| format!("waiting for `{self}`"))?;
        if let Some(writer) = writer {
            // A child that exits without reading its input is judged by its exit status.
            let _ = writer.join();
        }
        Ok(output)
    }

    /// Starts the child in the background, in a process group of its own so that a Ctrl-C at
    /// the terminal reaches only xtask, which decides what happens to its children.
    pub(crate) fn spawn_detached(
        mut self,
        stdin: Stdio,
        stdout: Stdio,
        stderr: Stdio,
    ) -> anyhow::Result<Child> {
        self.inner
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .with_context(|| format!("could not start `{self}`"))
    }

    /// Runs with stderr inherited and stdout piped: every stdout line is echoed to our stdout as it
    /// arrives and handed to `on_line`.
    pub(crate) fn stream_stdout(
        mut self,
        mut on_line: impl FnMut(&str),
    ) -> anyhow::Result<ExitStatus> {
        let mut child = self
            .inner
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("could not start `{self}`"))?;
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut out = std::io::stdout().lock();
        let mut buf = Vec::new();
        // Lossy, line by line: a test that prints bytes that are not UTF-8 must not stop the run.
        while stdout
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("reading the output of `{self}`"))?
            > 0
        {
            out.write_all(&buf)?;
            out.flush()?;
            on_line(String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']));
            buf.clear();
        }
        drop(out);
        child
            .wait()
            .with_context(|| format!("waiting for `{self}`"))
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}
