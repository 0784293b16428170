//! Repository-wide invariants, checked by ordinary `#[test]`s (see `tidy/tests.rs`).
//!
//! `cargo test -p xtask`, and so `cargo xtask ci`, runs every check; `cargo xtask tidy` runs the
//! same checks without building the test harness. Each check returns every violation it finds as a
//! `file:line: message`, so one run names everything to fix. A new invariant is a new entry in
//! [`CHECKS`] plus one `#[test]` in `tidy/tests.rs`.
//!
//! The checks read the working tree, not the git index, so a file is checked before it is
//! committed. They skip `.git`, every `target` directory, and the fuzzers' inputs and outputs,
//! which are data and may hold anything.

#[cfg(test)]
mod tests;

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, bail};

use crate::metadata::Metadata;

/// Crates that must do no I/O: they may not reach these packages through normal dependencies.
const PURE_CRATES: &[&str] = &["weft-ipam", "weft-config", "weft-fabric"];

/// Packages that mean a runtime or syscalls.
const IO_PACKAGES: &[&str] = &["tokio", "rtnetlink", "netlink-sys", "nix"];

/// The one crate that talks to netlink.
const NETLINK_CRATE: &str = "weft-kernel";

/// The netlink crates: only [`NETLINK_CRATE`] may depend on them directly.
const NETLINK_PACKAGES: &[&str] = &[
    "rtnetlink",
    "netlink-sys",
    "netlink-proto",
    "netlink-packet-core",
    "netlink-packet-route",
    "netlink-packet-utils",
];

/// The tunnel's sans-IO protocol: time arrives as an argument and there is no runtime.
const TUNNEL_PROTO: &[&str] = &["crates/tunnel/src/proto", "crates/tunnel/src/proto.rs"];

/// Packages that may use `anyhow`: the binaries and xtask. Libraries return their crate's error
/// enum, so callers can match on it.
const ANYHOW_USERS: &[&str] = &["weft-server", "weft-agent", "xtask"];

/// Edges between weft crates that the architecture rules out: (crate, what it must not reach,
/// why). weft-ipam, at the bottom, must reach no weft crate at all (see [`boundaries`]).
const FORBIDDEN_EDGES: &[(&str, &str, &str)] = &[(
    "weft-node",
    "weft-store",
    "an agent learns leases from the servers' API, never from the store",
)];

/// The crates at the bottom of the graph: they depend on no other weft crate.
const BOTTOM_CRATES: &[&str] = &["weft-ipam", "weft-cause"];

/// Directories of data, not source, relative to the project root.
const DATA_DIRS: &[&str] = &["fuzz/corpus", "fuzz/artifacts", "fuzz/coverage"];

/// The fuzz package: its targets live in `fuzz/fuzz_targets/` and their seeds in `fuzz/corpus/`.
pub(crate) const FUZZ_PACKAGE: &str = "weft-fuzz";

/// One named invariant.
pub(crate) struct Check {
    pub(crate) name: &'static str,
    pub(crate) run: fn(&Tree) -> anyhow::Result<Vec<Violation>>,
}

/// Every check, in the order `cargo xtask tidy` runs them.
pub(crate) const CHECKS: &[Check] = &[
    Check {
        name: "every .rs file opens with a //! doc comment",
        run: |tree| Ok(tree.each_file(&["rs"], doc_comment)),
    },
    Check {
        name: "no trailing whitespace in .rs, .toml and .md files",
        run: |tree| Ok(tree.each_file(&["rs", "toml", "md"], trailing_whitespace)),
    },
    Check {
        name: "no should_panic attributes",
        run: |tree| Ok(tree.each_file(&["rs"], should_panic)),
    },
    Check {
        name: "no todo or unimplemented macros outside tests",
        run: |tree| Ok(tree.each_file(&["rs"], placeholders)),
    },
    Check {
        name: "pure crates do not depend on tokio, rtnetlink, netlink-sys or nix",
        run: pure_crates,
    },
    Check {
        name: "only weft-kernel depends directly on the netlink crates",
        run: netlink_only_in_kernel,
    },
    Check {
        name: "crate boundaries: weft-ipam and weft-cause reach no weft crate, weft-node not weft-store, anyhow only in the binaries and xtask",
        run: |tree| Ok(boundaries(&tree.root, tree.metadata()?)),
    },
    Check {
        name: "the tunnel protocol never mentions Instant::now or tokio",
        run: |tree| Ok(tunnel_proto(tree)),
    },
    Check {
        name: "every fuzz target is a bin of weft-fuzz with a seed corpus",
        run: fuzz_targets,
    },
];

/// Runs every check and prints each violation; fails if there is any.
pub(crate) fn run(root: &Path) -> anyhow::Result<()> {
    let tree = Tree::load(root)?;
    let mut total = 0;
    for check in CHECKS {
        let violations = (check.run)(&tree).with_context(|| format!("tidy: {}", check.name))?;
        let verdict = if violations.is_empty() {
            "ok"
        } else {
            "FAILED"
        };
        println!("{verdict:6} {}", check.name);
        for violation in &violations {
            println!("       {violation}");
        }
        total += violations.len();
    }
    if total > 0 {
        bail!("tidy found {total} violation(s)");
    }
    Ok(())
}

/// One broken rule at one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Violation {
    /// Relative to the project root, with `/` separators.
    pub(crate) path: String,
    /// 1-based.
    pub(crate) line: usize,
    pub(crate) message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path, self.line, self.message)
    }
}

/// The files tidy looks at, read once.
pub(crate) struct Tree {
    root: PathBuf,
    files: Vec<SourceFile>,
    /// `cargo metadata`, run at most once: the first check that needs it runs it.
    metadata: OnceLock<Result<Metadata, String>>,
}

/// One file of the working tree.
pub(crate) struct SourceFile {
    /// Relative to the project root, with `/` separators.
    path: String,
    text: String,
}

// === impl Tree ===

impl Tree {
    /// Reads every `.rs`, `.toml` and `.md` file under `root`, skipping `.git`, every directory
    /// called `target`, and [`DATA_DIRS`].
    pub(crate) fn load(root: &Path) -> anyhow::Result<Self> {
        let mut paths = Vec::new();
        walk(root, root, &mut paths)?;
        paths.sort();
        let files = paths
            .into_iter()
            .filter(|path| has_extension(path, &["rs", "toml", "md"]))
            .map(|path| {
                let text = fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                Ok(SourceFile {
                    path: relative(root, &path),
                    text,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            root: root.to_path_buf(),
            files,
            metadata: OnceLock::new(),
        })
    }

    fn metadata(&self) -> anyhow::Result<&Metadata> {
        let loaded = self
            .metadata
            .get_or_init(|| Metadata::load(&self.root).map_err(|err| format!("{err:#}")));
        loaded.as_ref().map_err(|err| anyhow::anyhow!("{err}"))
    }

    fn each_file(
        &self,
        extensions: &[&str],
        check: fn(&str, &str) -> Vec<Violation>,
    ) -> Vec<Violation> {
        self.files
            .iter()
            .filter(|file| has_extension(Path::new(&file.path), extensions))
            .flat_map(|file| check(&file.path, &file.text))
            .collect()
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let entries = fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            let skip = entry.file_name() == ".git"
                || entry.file_name() == "target"
                || DATA_DIRS.contains(&relative(root, &path).as_str());
            if !skip {
                walk(root, &path, out)?;
            }
        } else if file_type.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

fn relative(root: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(root).unwrap_or(path);
    let parts: Vec<_> = relative
        .components()
        .map(|part| part.as_os_str().to_string_lossy())
        .collect();
    parts.join("/")
}

fn has_extension(path: &Path, extensions: &[&str]) -> bool {
    path.extension()
        .and_then(|ext| ext.to_str())
        .is_some_and(|ext| extensions.contains(&ext))
}

fn violation(path: &str, line: usize, message: impl Into<String>) -> Violation {
    Violation {
        path: path.to_owned(),
        line,
        message: message.into(),
    }
}

// The needles below are split so that this file does not trip its own checks.
const SHOULD_PANIC: &str = concat!("#[should", "_panic");
const TODO: &str = concat!("todo", "!");
const UNIMPLEMENTED: &str = concat!("unimplemented", "!");
const INSTANT_NOW: &str = concat!("Instant", "::now");
const CFG_TEST: &str = "#[cfg(test)]";

/// The first line is a `//!` doc comment.
fn doc_comment(path: &str, text: &str) -> Vec<Violation> {
    if text.starts_with("//!") {
        return Vec::new();
    }
    vec![violation(
        path,
        1,
        "does not open with a `//!` doc comment saying what the file is for",
    )]
}

fn trailing_whitespace(path: &str, text: &str) -> Vec<Violation> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| line.ends_with([' ', '\t']))
        .map(|(i, _)| violation(path, i + 1, "trailing whitespace"))
        .collect()
}

fn should_panic(path: &str, text: &str) -> Vec<Violation> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| line.contains(SHOULD_PANIC))
        .map(|(i, _)| {
            let message = format!(
                "`{SHOULD_PANIC}]`: assert on the error value instead, so the test says which failure it expects"
            );
            violation(path, i + 1, message)
        })
        .collect()
}

/// `todo!` and `unimplemented!` outside test code.
///
/// Test code is a file called `tests.rs`, a file under a `tests/` directory, or the item after a
/// `#[cfg(test)]` line. That item ends at its first line when the line ends in `;` (as in
/// `mod tests;`), and otherwise at the `}` indented like its first line, which rustfmt guarantees.
fn placeholders(path: &str, text: &str) -> Vec<Violation> {
    let mut parts = path.split('/');
    let file_name = parts.next_back().unwrap_or_default();
    if file_name == "tests.rs" || parts.any(|dir| dir == "tests") {
        return Vec::new();
    }
    let lines: Vec<&str> = text.lines().collect();
    let mut violations = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() == CFG_TEST {
            i = end_of_item(&lines, i + 1);
            continue;
        }
        let code = lines[i].split("//").next().unwrap_or_default();
        for needle in [TODO, UNIMPLEMENTED] {
            if contains_macro(code, needle) {
                let message =
                    format!("`{needle}` outside tests: finish the code or return an error");
                violations.push(violation(path, i + 1, message));
            }
        }
        i += 1;
    }
    violations
}

/// The index of the line after the item that starts at `start`, skipping attributes and comments.
fn end_of_item(lines: &[&str], start: usize) -> usize {
    let mut first = start;
    while first < lines.len() {
        let line = lines[first].trim_start();
        if !(line.starts_with("#[") || line.starts_with("//") || line.is_empty()) {
            break;
        }
        first += 1;
    }
    let Some(head) = lines.get(first) else {
        return lines.len();
    };
    let body = head.trim_end();
    if body.ends_with(';')
        || (body.ends_with('}') && body.matches('{').count() == body.matches('}').count())
    {
        return first + 1;
    }
    let indent = &head[..head.len() - head.trim_start().len()];
    lines[first + 1..]
        .iter()
        .position(|line| {
            line.strip_prefix(indent)
                .is_some_and(|rest| rest.trim_end() == "}" || rest.trim_end() == "};")
        })
        .map_or(lines.len(), |end| first + 1 + end + 1)
}

/// Whether `code` invokes the macro `needle` (which ends in `!`), not just a longer name.
fn contains_macro(code: &str, needle: &str) -> bool {
    code.match_indices(needle).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

fn pure_crates(tree: &Tree) -> anyhow::Result<Vec<Violation>> {
    let metadata = tree.metadata()?;
    let mut violations = Vec::new();
    for krate in PURE_CRATES {
        let Some(manifest) = metadata.manifest_path(krate) else {
            continue; // Not written yet.
        };
        let manifest_text = fs::read_to_string(&manifest).unwrap_or_default();
        let path = relative(&tree.root, &manifest);
        for chain in metadata.normal_dependency_chains(krate, IO_PACKAGES) {
            let forbidden = chain.last().map(String::as_str).unwrap_or_default();
            let direct = chain.get(1).map(String::as_str).unwrap_or_default();
            let message = format!(
                "{krate} is a pure crate but depends on {forbidden} ({}); move the I/O into a shell crate",
                chain.join(" -> "),
            );
            violations.push(violation(
                &path,
                declaration_line(&manifest_text, direct),
                message,
            ));
        }
    }
    Ok(violations)
}

/// Other crates reach the kernel through weft-kernel's API, so netlink details stay in one place.
fn netlink_only_in_kernel(tree: &Tree) -> anyhow::Result<Vec<Violation>> {
    let metadata = tree.metadata()?;
    let mut violations = Vec::new();
    for member in metadata.members() {
        if member == NETLINK_CRATE {
            continue;
        }
        let Some(manifest) = metadata.manifest_path(&member) else {
            continue;
        };
        let manifest_text = fs::read_to_string(&manifest).unwrap_or_default();
        let path = relative(&tree.root, &manifest);
        // A shortest chain of two packages is a direct dependency.
        let chains = metadata.normal_dependency_chains(&member, NETLINK_PACKAGES);
        for chain in chains.iter().filter(|chain| chain.len() == 2) {
            let message = format!(
                "{member} depends directly on {}; only {NETLINK_CRATE} talks to netlink, go through its API",
                chain[1],
            );
            violations.push(violation(
                &path,
                declaration_line(&manifest_text, &chain[1]),
                message,
            ));
        }
    }
    Ok(violations)
}

/// One dependency rule of [`boundaries`]: `krate` must not reach any of `forbidden` (with
/// `direct_only`, must not declare it).
struct Rule<'a> {
    krate: &'a str,
    forbidden: Vec<&'a str>,
    why: &'a str,
    direct_only: bool,
}

/// The dependency edges ARCHITECTURE.md rules out: a [`BOTTOM_CRATES`] member reaching any weft crate,
/// the [`FORBIDDEN_EDGES`], and a direct `anyhow` outside [`ANYHOW_USERS`].
fn boundaries(root: &Path, metadata: &Metadata) -> Vec<Violation> {
    let members = metadata.members();
    let mut rules: Vec<Rule<'_>> = BOTTOM_CRATES
        .iter()
        .map(|&krate| Rule {
            krate,
            forbidden: members
                .iter()
                .map(String::as_str)
                .filter(|m| m.starts_with("weft-") && *m != krate)
                .collect(),
            why: "it is the bottom of the graph: move the code that needs it up a layer",
            direct_only: false,
        })
        .collect();
    for &(krate, forbidden, why) in FORBIDDEN_EDGES {
        rules.push(Rule {
            krate,
            forbidden: vec![forbidden],
            why,
            direct_only: false,
        });
    }
    for member in members
        .iter()
        .filter(|m| !ANYHOW_USERS.contains(&m.as_str()))
    {
        rules.push(Rule {
            krate: member,
            forbidden: vec!["anyhow"],
            why: "a library returns its crate's thiserror enum; anyhow is for the binaries and xtask",
            direct_only: true,
        });
    }
    let mut violations = Vec::new();
    for rule in rules {
        let Some(manifest) = metadata.manifest_path(rule.krate) else {
            continue;
        };
        let manifest_text = fs::read_to_string(&manifest).unwrap_or_default();
        let path = relative(root, &manifest);
        for chain in metadata.normal_dependency_chains(rule.krate, &rule.forbidden) {
            if rule.direct_only && chain.len() != 2 {
                continue;
            }
            let direct = chain.get(1).map(String::as_str).unwrap_or_default();
            let message = format!(
                "{} depends on {} ({}): {}",
                rule.krate,
                chain.last().map(String::as_str).unwrap_or_default(),
                chain.join(" -> "),
                rule.why,
            );
            violations.push(violation(
                &path,
                declaration_line(&manifest_text, direct),
                message,
            ));
        }
    }
    violations
}

/// The line of `Cargo.toml` that declares the dependency `name`, or 1.
fn declaration_line(manifest: &str, name: &str) -> usize {
    manifest
        .lines()
        .position(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.trim_start().starts_with(['=', '.']))
        })
        .map_or(1, |i| i + 1)
}

fn tunnel_proto(tree: &Tree) -> Vec<Violation> {
    let in_proto = |path: &str| {
        TUNNEL_PROTO
            .iter()
            .any(|proto| path == *proto || path.starts_with(&format!("{proto}/")))
    };
    let mut violations = Vec::new();
    for file in tree.files.iter().filter(|file| in_proto(&file.path)) {
        for (i, line) in file.text.lines().enumerate() {
            if line.contains(INSTANT_NOW) {
                let message =
                    format!("`{INSTANT_NOW}` in the tunnel protocol: take `now` as an argument");
                violations.push(violation(&file.path, i + 1, message));
            }
            if line
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .any(|word| word == "tokio")
            {
                let message =
                    "`tokio` in the tunnel protocol: it is sans-IO, the transport owns the runtime";
                violations.push(violation(&file.path, i + 1, message));
            }
        }
    }
    violations
}

fn fuzz_targets(tree: &Tree) -> anyhow::Result<Vec<Violation>> {
    let sources: Vec<&SourceFile> = tree
        .files
        .iter()
        .filter(|file| {
            file.path
                .strip_prefix("fuzz/fuzz_targets/")
                .is_some_and(|name| !name.contains('/') && name.ends_with(".rs"))
        })
        .collect();
    if sources.is_empty() {
        return Ok(Vec::new());
    }
    let metadata = tree.metadata()?;
    let bins: Vec<_> = metadata
        .targets(FUZZ_PACKAGE)
        .into_iter()
        .filter(|target| target.kinds.iter().any(|kind| kind == "bin"))
        .map(|target| (target.name, relative(&tree.root, &target.src_path)))
        .collect();
    let mut violations = Vec::new();
    for source in sources {
        let Some((name, _)) = bins.iter().find(|(_, src)| *src == source.path) else {
            let message = format!("not a `[[bin]]` of {FUZZ_PACKAGE} in fuzz/Cargo.toml");
            violations.push(violation(&source.path, 1, message));
            continue;
        };
        let corpus = tree.root.join("fuzz/corpus").join(name);
        let seeded = fs::read_dir(&corpus).is_ok_and(|mut entries| entries.next().is_some());
        if !seeded {
            let message = format!("fuzz target `{name}` has no seed inputs in fuzz/corpus/{name}/");
            violations.push(violation(&source.path, 1, message));
        }
    }
    Ok(violations)
}
