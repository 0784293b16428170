//! The command line: one enum of tasks, parsed by hand so xtask needs no argument-parsing crate.

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use anyhow::{Context, bail};

/// Printed by `cargo xtask help` and after a usage error.
pub(crate) const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  ci                          run every check and test (fmt, clippy, unit, integration and tidy
                              tests); the last line is `N passed, N failed`
  tidy                        check the repository-wide invariants (`cargo test -p xtask` runs
                              them too)
  fuzz <target> [--seconds N] run a cargo-fuzz target from fuzz/ for N seconds (default 60)
  fuzz --list                 list the fuzz targets
  bench [NAME]                run the benches in benches/: all of them, or the one named
  e2e [--only NAME]... [--bin-dir DIR] [--wireguard-implementation kernel|userspace]
                              run whole clusters in network namespaces (root; installs the
                              Debian packages it needs); the last line is `N passed, N failed`
  e2e --vm [--kernel PATH] [--only NAME]...
                              the same inside a VM that boots Debian's kernel (or PATH), where
                              wireguard-native runs on the kernel module (root; qemu, KVM or TCG)
  e2e --vm --netns-tests [--kernel PATH]
                              in that VM, weft-kernel's privileged tests of the kernel's
                              WireGuard (the `kernel_wireguard` ones, ignored on the host)
  e2e [--vm] --list           list the end-to-end scenarios
  demo [--once] [--bin-dir DIR]
                              run a three-node cluster with two pods per node, print its
                              nodes, pods and connectivity, and keep it up until Enter (root)
  help                        print this text

e2e and demo build weft-server and weft-agent in release mode first; `--bin-dir DIR` uses the
binaries in DIR instead.";

/// Seconds a fuzz run lasts when `--seconds` is not given.
const DEFAULT_FUZZ_SECONDS: u64 = 60;

/// One `cargo xtask` invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Task {
    Help,
    Ci,
    Tidy,
    Fuzz(Fuzz),
    Bench(Bench),
    E2e(E2e),
    Demo(Demo),
}

/// `cargo xtask fuzz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fuzz {
    /// `--list`: print the targets.
    List,
    /// Run one target for a bounded time.
    Run { target: String, seconds: u64 },
}

/// `cargo xtask bench [NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bench {
    /// The bench to run; every bench when `None`.
    pub(crate) name: Option<String>,
}

/// `cargo xtask e2e`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct E2e {
    /// `--list`: print the scenarios and run nothing.
    pub(crate) list: bool,
    /// `--only NAME` (repeatable): run these scenarios; every scenario when empty.
    pub(crate) only: Vec<String>,
    /// `--bin-dir DIR`: take the weft binaries from DIR instead of building them.
    pub(crate) bin_dir: Option<PathBuf>,
    /// `--reap PID` (internal, not in the usage text): run as the guardian of e2e run PID,
    /// which removes what that run left behind once it exits (see `e2e/reaper.rs`).
    pub(crate) reap: Option<u32>,
    /// `--serve ADDRESS NAME` (internal, not in the usage text): run as a tiny HTTP server on
    /// ADDRESS that answers every request with NAME and the client's address, standing in for
    /// a kubelet or a pod's server in a namespace (see `e2e/responder.rs`).
    pub(crate) serve: Option<(String, String)>,
    /// `--vm`: run the scenarios inside a VM that boots a distribution kernel.
    pub(crate) vm: bool,
    /// `--kernel PATH`: the vmlinuz the VM boots (Debian's `linux-image-amd64` when `None`).
    pub(crate) kernel: Option<PathBuf>,
    /// `--wireguard-implementation IMPL`: every node runs with it, and the wireguard-native
    /// scenarios check their devices are of that implementation (`kernel` by default in a VM).
    pub(crate) wireguard: Option<WireguardImplementation>,
    /// `--in-vm` (internal, not in the usage text): this run is the one inside the VM, which
    /// readies the guest before its scenarios.
    pub(crate) in_vm: bool,
    /// `--netns-tests` (with `--vm`): run weft-kernel's kernel-WireGuard tests in the VM
    /// instead of scenarios.
    pub(crate) netns_tests: bool,
    /// `--test-binary PATH` (internal, repeatable): the test binaries the guest runs for
    /// `--netns-tests`.
    pub(crate) test_binaries: Vec<PathBuf>,
    /// `--patience N` (internal, not in the usage text): wait N times as long for anything to
    /// happen (a VM under software emulation is several times slower).
    pub(crate) patience: Option<u32>,
}

/// `--wireguard-implementation` of an e2e run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WireguardImplementation {
    Kernel,
    Userspace,
}

impl WireguardImplementation {
    /// The flag value weft takes.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            WireguardImplementation::Kernel => "kernel",
            WireguardImplementation::Userspace => "userspace",
        }
    }
}

/// `cargo xtask demo`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Demo {
    /// `--once`: exit after printing the tables instead of waiting for Enter.
    pub(crate) once: bool,
    /// `--bin-dir DIR`: take the weft binaries from DIR instead of building them.
    pub(crate) bin_dir: Option<PathBuf>,
}

/// Parses the arguments after `cargo xtask`.
pub(crate) fn parse(args: &[String]) -> anyhow::Result<Task> {
    let Some((task, rest)) = args.split_first() else {
        bail!("no task given");
    };
    let task = match task.as_str() {
        "help" | "-h" | "--help" => {
            no_more_args(rest)?;
            Task::Help
        }
        "ci" => {
            no_more_args(rest)?;
            Task::Ci
        }
        "tidy" => {
            no_more_args(rest)?;
            Task::Tidy
        }
        "fuzz" => Task::Fuzz(parse_fuzz(rest)?),
        "bench" => Task::Bench(parse_bench(rest)?),
        "e2e" => Task::E2e(parse_e2e(rest)?),
        "demo" => Task::Demo(parse_demo(rest)?),
        other => bail!("unknown task `{other}`"),
    };
    Ok(task)
}

fn parse_fuzz(args: &[String]) -> anyhow::Result<Fuzz> {
    let mut list = false;
    let mut target = None;
    let mut seconds = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--list" => list = true,
            "--seconds" => {
                let value = args.next().context("`--seconds` needs a value")?;
                seconds = Some(parse_seconds(value)?);
            }
            _ if arg.starts_with("--seconds=") => {
                seconds = Some(parse_seconds(&arg["--seconds=".len()..])?);
            }
            _ if arg.starts_with('-') => bail!("unknown fuzz flag `{arg}`"),
            _ if target.is_none() => target = Some(arg.clone()),
            _ => bail!("unexpected argument `{arg}`: fuzz runs one target at a time"),
        }
    }
    match (list, target) {
        (true, None) if seconds.is_none() => Ok(Fuzz::List),
        (true, _) => bail!("`--list` takes no target and no `--seconds`"),
        (false, Some(target)) => Ok(Fuzz::Run {
            target,
            seconds: seconds.unwrap_or(DEFAULT_FUZZ_SECONDS),
        }),
        (false, None) => bail!("fuzz needs a target name or `--list`"),
    }
}

fn parse_seconds(value: &str) -> anyhow::Result<u64> {
    match value.parse::<u64>() {
        Ok(0) | Err(_) => bail!("`--seconds` needs a whole number above 0, not `{value}`"),
        Ok(seconds) => Ok(seconds),
    }
}

fn parse_bench(args: &[String]) -> anyhow::Result<Bench> {
    match args {
        [] => Ok(Bench { name: None }),
        [name] if !name.starts_with('-') => Ok(Bench {
            name: Some(name.clone()),
        }),
        [flag] => bail!("unknown bench flag `{flag}`"),
        [_, extra, ..] => bail!("unexpected argument `{extra}`: bench takes at most one name"),
    }
}

fn parse_e2e(args: &[String]) -> anyhow::Result<E2e> {
    let mut e2e = E2e::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--list" => e2e.list = true,
            "--only" => e2e.only.push(
                args.next()
                    .context("`--only` needs a scenario name")?
                    .clone(),
            ),
            "--bin-dir" => {
                e2e.bin_dir = Some(args.next().context("`--bin-dir` needs a directory")?.into());
            }
            "--reap" => {
                let pid = args.next().context("`--reap` needs a process id")?;
                e2e.reap = Some(
                    pid.parse()
                        .with_context(|| format!("`--reap` needs a process id, not `{pid}`"))?,
                );
            }
            "--vm" => e2e.vm = true,
            "--in-vm" => e2e.in_vm = true,
            "--netns-tests" => e2e.netns_tests = true,
            "--test-binary" => e2e
                .test_binaries
                .push(args.next().context("`--test-binary` needs a path")?.into()),
            "--patience" => {
                let n = args.next().context("`--patience` needs a factor")?;
                e2e.patience =
                    Some(n.parse().with_context(|| {
                        format!("`--patience` needs a whole number, not `{n}`")
                    })?);
            }
            "--kernel" => {
                e2e.kernel = Some(
                    args.next()
                        .context("`--kernel` needs a vmlinuz path")?
                        .into(),
                );
            }
            "--wireguard-implementation" => {
                e2e.wireguard = Some(match args.next().map(String::as_str) {
                    Some("kernel") => WireguardImplementation::Kernel,
                    Some("userspace") => WireguardImplementation::Userspace,
                    other => bail!(
                        "`--wireguard-implementation` takes kernel or userspace, not {other:?}"
                    ),
                });
            }
            "--serve" => {
                let address = args
                    .next()
                    .context("`--serve` needs an address and a name")?;
                let name = args
                    .next()
                    .context("`--serve` needs an address and a name")?;
                e2e.serve = Some((address.clone(), name.clone()));
            }
            _ if arg.starts_with('-') => bail!("unknown e2e flag `{arg}`"),
            _ => bail!("unexpected argument `{arg}`: name a scenario with `--only {arg}`"),
        }
    }
    if e2e.list && (!e2e.only.is_empty() || e2e.bin_dir.is_some()) {
        bail!("`--list` takes no other flag but `--vm`");
    }
    if e2e.kernel.is_some() && !e2e.vm {
        bail!("`--kernel` needs `--vm`: it names the kernel the VM boots");
    }
    if e2e.netns_tests && !e2e.vm {
        bail!("`--netns-tests` needs `--vm`: the tests need the kernel's WireGuard module");
    }
    if e2e.netns_tests && (!e2e.only.is_empty() || e2e.list) {
        bail!("`--netns-tests` runs tests, not scenarios: drop `--only` and `--list`");
    }
    Ok(e2e)
}

fn parse_demo(args: &[String]) -> anyhow::Result<Demo> {
    let mut demo = Demo::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--once" => demo.once = true,
            "--bin-dir" => {
                demo.bin_dir = Some(args.next().context("`--bin-dir` needs a directory")?.into());
            }
            _ if arg.starts_with('-') => bail!("unknown demo flag `{arg}`"),
            _ => bail!("unexpected argument `{arg}`"),
        }
    }
    Ok(demo)
}

fn no_more_args(rest: &[String]) -> anyhow::Result<()> {
    match rest.first() {
        None => Ok(()),
        Some(arg) => bail!("unexpected argument `{arg}`"),
    }
}
