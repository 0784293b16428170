//! `cargo xtask e2e --vm`: the scenarios inside a VM that boots a distribution kernel, so the
//! kernel paths this machine's kernel lacks (WireGuard's module above all) are tested too.
//!
//! The VM is virtme-ng's (`vng`): qemu boots the kernel with this machine's root file system
//! shared read-only over 9p (writes land in the guest's own tmpfs overlays), and runs this very
//! xtask with `e2e --in-vm` and the release binaries built here. The guest needs no network: it
//! makes its own namespaces, as the e2e run on the host does. With `--netns-tests` the guest
//! runs weft-kernel's privileged `kernel_wireguard` tests (ignored on a host without the
//! module) from the test binary built here, instead of scenarios.
//!
//! qemu runs inside a network namespace of the run's own (`wfe-<pid>-<n>-vm`), so the run's
//! guardian (see [`reaper`](super::reaper)) kills it, and everything it started, however the
//! run ends. KVM is used when it boots a guest here; otherwise TCG (software emulation, several
//! times slower), as the first line says.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::ci::{Tally, parse_test_result};
use crate::cmd::{cargo, cmd};
use crate::flags::{E2e, WireguardImplementation};

use super::Env;
use super::deps::{self, Package};
use super::lab::{Lab, Ns};

/// What the VM lane needs besides the e2e packages.
const PACKAGES: &[Package] = &[
    Package {
        name: "qemu-system-x86",
        files: &["qemu-system-x86_64"],
        why: "the VM",
    },
    Package {
        name: "busybox-static",
        files: &["/bin/busybox"],
        why: "virtme-ng's initramfs, which loads the 9p modules of the shared root",
    },
];
/// The Debian package of the default kernel, and the prefix of its vmlinuz in `/boot`.
const DEFAULT_KERNEL: (&str, &str) = ("linux-image-amd64", "vmlinuz-6.1.");
/// How long a guest may take to boot under KVM before KVM is taken for not working here.
const KVM_PROBE: Duration = Duration::from_secs(20);
/// How long the whole VM run may take.
const VM_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// How many times longer the guest waits for things under KVM and under TCG.
const PATIENCE_KVM: u32 = 2;
const PATIENCE_TCG: u32 = 6;
/// The modules the guest loads before the scenarios run (the kernel loads the others on use).
const GUEST_MODULES: &[&str] = &["tun"];
/// The name every test of the kernel's WireGuard starts with (they are ignored on the host).
const KERNEL_TESTS: &str = "kernel_wireguard";
/// The guest's memory and CPUs: room for a few clusters, within this 2-core, 24 GiB machine.
const MEMORY: &str = "4G";
const CPUS: &str = "2";

/// Boots the VM and runs the selected scenarios in it; the guest's `N passed, N failed` is the
/// last line.
pub(crate) fn run(root: &Path, flags: &E2e) -> anyhow::Result<ExitCode> {
    let kernel = match &flags.kernel {
        Some(path) if path.is_file() => path.clone(),
        Some(path) => bail!("--kernel {} is not a file", path.display()),
        None => default_kernel()?,
    };
    deps::ensure(&PACKAGES.iter().collect::<Vec<_>>(), true)?;
    let vng = virtme_ng(root)?;
    let env = Env::prepare(root, flags.bin_dir.as_deref(), None)?;
    let lab = Lab::new(&env, "vm")?;
    let ns = lab.ns("vm")?;
    let release = kernel_release(&kernel);
    let kvm = kvm_works(&lab, &ns, &vng, &kernel);
    println!();
    println!(
        "e2e --vm: kernel {release} ({}), {}",
        kernel.display(),
        if kvm {
            "KVM".to_owned()
        } else {
            format!(
                "TCG: software emulation, as KVM did not boot a guest here within {} s",
                KVM_PROBE.as_secs()
            )
        }
    );
    let xtask = std::env::current_exe().context("finding this xtask's executable")?;
    // The agents' loop logs each lease update and each empty check at debug: a scenario that
    // fails in the VM (slow, hard to run again) then shows where its agent spent the time.
    let mut guest = vec![
        "env".to_owned(),
        "RUST_LOG=info,weft_node::agent=debug".to_owned(),
        xtask.display().to_string(),
        "e2e".to_owned(),
        "--in-vm".to_owned(),
    ];
    if flags.netns_tests {
        for binary in kernel_test_binaries(root)? {
            guest.extend(["--test-binary".to_owned(), binary.display().to_string()]);
        }
    } else {
        let bin_dir = env
            .server
            .parent()
            .context("the binaries' directory")?
            .to_owned();
        guest.extend([
            "--bin-dir".to_owned(),
            bin_dir.display().to_string(),
            "--wireguard-implementation".to_owned(),
            flags
                .wireguard
                .unwrap_or(WireguardImplementation::Kernel)
                .as_str()
                .to_owned(),
            "--patience".to_owned(),
            (if kvm { PATIENCE_KVM } else { PATIENCE_TCG }).to_string(),
        ]);
        for name in &flags.only {
            guest.extend(["--only".to_owned(), name.clone()]);
        }
    }
    let started = Instant::now();
    let mut verdict = None;
    // vng's own stderr joins its stdout: it writes the guest's console there, and reopening
    // an inherited stderr that is a file would write over what the run printed before.
    let status = ns
        .exec(root, "sh")
        .args(["-c", "exec \"$@\" 2>&1", "sh", "timeout"])
        .args(["--kill-after=10", &VM_TIMEOUT.as_secs().to_string()])
        .arg(&vng)
        .args(vng_args(&kernel, kvm))
        .args(["--exec", &guest.join(" ")])
        .stream_stdout(|line| {
            if line.ends_with(" failed") && line.contains(" passed, ") {
                verdict = Some(line.to_owned());
            }
        })?;
    drop(lab);
    drop(env);
    println!(
        "e2e --vm took {:.0}s in all (kernel {release})",
        started.elapsed().as_secs_f64()
    );
    let Some(verdict) = verdict else {
        // The guest never got to its verdict: say why in one line, and count the run failed.
        if status.code() == Some(124) {
            println!(
                "the VM ran out of its {} minutes",
                VM_TIMEOUT.as_secs() / 60
            );
        } else {
            println!("the VM did not run the scenarios to the end ({status})");
        }
        println!("0 passed, 1 failed");
        return Ok(ExitCode::FAILURE);
    };
    // The verdict, last, where `cargo xtask ci` reads it.
    println!("{verdict}");
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The privileged test binaries whose kernel-WireGuard tests the VM runs (weft-kernel's
/// `wireguard` tests, built with `netns-tests`), built here first.
fn kernel_test_binaries(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    println!("building weft-kernel's privileged tests");
    let out = cargo(root)
        .args([
            "test",
            "-p",
            "weft-kernel",
            "--features",
            "weft-kernel/netns-tests",
        ])
        .args(["--test", "wireguard", "--no-run", "--message-format=json"])
        .output(None)?;
    if !out.status.success() {
        bail!(
            "building weft-kernel's privileged tests failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let binaries: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .filter_map(|message| message["executable"].as_str().map(PathBuf::from))
        .collect();
    if binaries.is_empty() {
        bail!("cargo built weft-kernel's privileged tests but named no test executable");
    }
    Ok(binaries)
}

/// Inside the VM: readies the guest, runs the `kernel_wireguard` tests of each binary (ignored
/// on the host, so `--ignored`) one at a time, and prints `N passed, N failed` last. A run in
/// which no test ran fails: the filter or the binaries are wrong.
pub(crate) fn run_tests_in_guest(binaries: &[PathBuf]) -> anyhow::Result<ExitCode> {
    prepare_guest()?;
    let mut total = Tally::default();
    let mut all_ran = true;
    for binary in binaries {
        println!();
        println!("e2e --vm --netns-tests: {}", binary.display());
        let status = cmd(Path::new("/"), binary)
            .args(["--ignored", "--test-threads", "1", KERNEL_TESTS])
            .stream_stdout(|line| {
                if let Some(result) = parse_test_result(line) {
                    total.passed += result.passed;
                    total.failed += result.failed;
                }
            })?;
        all_ran &= status.success();
    }
    if total.passed + total.failed == 0 {
        println!("no test named `{KERNEL_TESTS}` ran");
        total.failed = 1;
    } else if !all_ran && total.failed == 0 {
        // A binary that failed without a failing test (it crashed, or did not start).
        total.failed = 1;
    }
    println!("{} passed, {} failed", total.passed, total.failed);
    Ok(if total.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Readies the guest before its scenarios: loads the modules that are not loaded on first use
/// (the userspace WireGuard device opens `/dev/net/tun`, which exists once `tun` is loaded).
pub(crate) fn prepare_guest() -> anyhow::Result<()> {
    for module in GUEST_MODULES {
        cmd(Path::new("/"), "modprobe")
            .arg(module)
            .run()
            .with_context(|| format!("loading the {module} module in the VM"))?;
    }
    Ok(())
}

/// `vng` arguments that boot `kernel` with the shared root, KVM or not.
fn vng_args(kernel: &Path, kvm: bool) -> Vec<String> {
    let mut args = vec![
        "--run".to_owned(),
        kernel.display().to_string(),
        "--memory".to_owned(),
        MEMORY.to_owned(),
        "--cpus".to_owned(),
        CPUS.to_owned(),
    ];
    if !kvm {
        args.push("--disable-kvm".to_owned());
    }
    args
}

/// Whether a guest boots under KVM within [`KVM_PROBE`] (`/dev/kvm` may exist and still run no
/// ordinary guest: a VM whose host allows only its own kind).
fn kvm_works(lab: &Lab<'_>, ns: &Ns, vng: &Path, kernel: &Path) -> bool {
    if !Path::new("/dev/kvm").exists() {
        return false;
    }
    ns.exec(&lab.dir, "timeout")
        .args(["--kill-after=5", &KVM_PROBE.as_secs().to_string()])
        .arg(vng)
        .args(vng_args(kernel, true))
        .args(["--memory", "512M", "--exec", "true"])
        .succeeds()
}

/// Debian's `linux-image-amd64` kernel (6.1), installed when missing.
fn default_kernel() -> anyhow::Result<PathBuf> {
    let (package, prefix) = DEFAULT_KERNEL;
    if let Some(found) = newest_kernel(prefix) {
        return Ok(found);
    }
    if !crate::ci::is_root() {
        bail!("no {prefix}* in /boot: install {package} (as root: apt-get install {package})");
    }
    deps::apt_install(&[package])?;
    newest_kernel(prefix).with_context(|| format!("{package} installed no /boot/{prefix}*"))
}

/// The newest `/boot/<prefix>*-amd64` kernel, or the path it would have (which `--kernel`
/// then reports missing).
pub(crate) fn kernel_path(prefix: &str) -> PathBuf {
    newest_kernel(prefix).unwrap_or_else(|| Path::new("/boot").join(format!("{prefix}x-amd64")))
}

/// The newest `/boot/<prefix>*-amd64` kernel.
fn newest_kernel(prefix: &str) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/boot")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with("-amd64"))
        })
        .collect();
    found.sort();
    found.pop()
}

/// `6.1.0-57-amd64` of `/boot/vmlinuz-6.1.0-57-amd64`.
fn kernel_release(kernel: &Path) -> String {
    kernel
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.strip_prefix("vmlinuz-").unwrap_or(n).to_owned())
        .unwrap_or_default()
}

/// virtme-ng's `vng`: on `PATH`, or in Python's scripts directory; installed with pip when
/// missing (it is not a Debian package).
fn virtme_ng(root: &Path) -> anyhow::Result<PathBuf> {
    if let Some(found) = find_vng(root) {
        return Ok(found);
    }
    println!("installing virtme-ng (pip)");
    cmd(root, "python3")
        .args(["-m", "pip", "install", "--quiet", "virtme-ng"])
        .run()
        .context("installing virtme-ng with pip")?;
    find_vng(root).context("pip installed virtme-ng, but there is no `vng` to run")
}

fn find_vng(root: &Path) -> Option<PathBuf> {
    if let Some(on_path) = deps::find("vng") {
        return Some(on_path);
    }
    let scripts = cmd(root, "python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .read()
        .ok()?;
    let vng = Path::new(scripts.trim()).join("vng");
    vng.is_file().then_some(vng)
}
