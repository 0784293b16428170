//! weft's masquerade and forward rules in the kernel: reading them back into a
//! [`FirewallTable`] digest, and installing or removing them with `nft` or `iptables`.
//!
//! nftables: one table per family (`ip weft`, `ip6 weft`) whose comment describes the rule set.
//! Observing reads the comment and counts the rules per chain (`nft -j list table ip weft`); a
//! table whose counts differ from what the comment promises was changed by someone else and
//! gets a digest no desired table has, so the plan replaces it. Installing is one `nft -f -`
//! transaction that deletes and re-creates the table.
//!
//! iptables: flannel's chains `FLANNEL-POSTRTG` (nat) and `FLANNEL-FWD` (filter). The digest
//! is their rules as `iptables -S` prints them, plus a line per missing jump from `POSTROUTING`
//! or `FORWARD`. Installing is `iptables-restore --noflush` with the fabric's script, then the
//! jumps are checked with `-C` and appended with `-A`.

use weft_fabric::firewall::{
    IPT_FORWARD_CHAIN, IPT_MASQ_CHAIN, NFT_TABLE, iptables_binary, iptables_jumps,
    nft_expected_rule_counts, nft_family,
};
use weft_fabric::{FirewallTable, MasqMode};
use weft_ipam::Family;

use crate::KernelError;
use crate::cmd::Cmd;

#[cfg(test)]
mod tests;

/// The digest prefix of a table that weft-kernel found changed; no desired digest starts so.
const TAMPERED: &str = "changed outside weft:";

/// Reads weft's rules of `family` held by `mode`; `None` when there are none.
///
/// nftables: `nft -j list table ip weft`. iptables: `iptables -t nat -S` and
/// `iptables -t filter -S`.
pub(crate) fn observe(
    family: Family,
    mode: MasqMode,
) -> Result<Option<FirewallTable>, KernelError> {
    let digest = match mode {
        MasqMode::Nftables => observe_nft(family)?,
        MasqMode::Iptables => observe_iptables(family)?,
    };
    Ok(digest.map(|digest| FirewallTable {
        digest,
        script: String::new(),
    }))
}

/// Installs `table` for `family` with `mode`, replacing what weft had there.
pub(crate) fn replace(
    family: Family,
    mode: MasqMode,
    table: &FirewallTable,
) -> Result<(), KernelError> {
    match mode {
        MasqMode::Nftables => {
            // The script deletes and re-creates the table in one transaction.
            Cmd::new("nft")
                .args(["-f", "-"])
                .stdin(&table.script)
                .run()?;
        }
        MasqMode::Iptables => {
            let bin = iptables_binary(family);
            let masquerade = table.script.contains("*nat");
            if !masquerade {
                // A rule set without masquerading leaves no FLANNEL-POSTRTG behind.
                delete_iptables_chain(bin, "nat", "POSTROUTING", IPT_MASQ_CHAIN)?;
            }
            Cmd::new(format!("{bin}-restore"))
                .arg("--noflush")
                .stdin(&table.script)
                .run()?;
            for (tbl, rule) in iptables_jumps(masquerade) {
                let spec = rule_args(&rule);
                let check = Cmd::new(bin).args(["-t", tbl, "-C"]).args(spec.clone());
                if !check.output()?.status.success() {
                    Cmd::new(bin).args(["-t", tbl, "-A"]).args(spec).run()?;
                }
            }
        }
    }
    Ok(())
}

/// Removes weft's rules of `family` held by `mode`; rules that are already gone are fine.
///
/// nftables: `nft delete table ip weft`. iptables: the jumps (`-D`), then `-F` and `-X` of
/// each chain.
pub(crate) fn delete(family: Family, mode: MasqMode) -> Result<(), KernelError> {
    match mode {
        MasqMode::Nftables => {
            let fam = nft_family(family);
            // Declaring the table first makes the delete succeed when it is already gone.
            Cmd::new("nft")
                .args(["-f", "-"])
                .stdin(format!(
                    "table {fam} {NFT_TABLE}\ndelete table {fam} {NFT_TABLE}\n"
                ))
                .run()?;
        }
        MasqMode::Iptables => {
            let bin = iptables_binary(family);
            delete_iptables_chain(bin, "nat", "POSTROUTING", IPT_MASQ_CHAIN)?;
            delete_iptables_chain(bin, "filter", "FORWARD", IPT_FORWARD_CHAIN)?;
        }
    }
    Ok(())
}

/// Removes every jump from `from` to `chain`, then flushes and deletes `chain`, if it exists.
fn delete_iptables_chain(
    bin: &str,
    table: &str,
    from: &str,
    chain: &str,
) -> Result<(), KernelError> {
    let listing = Cmd::new(bin).args(["-t", table, "-S"]).run()?;
    let lines = chain_lines(&listing, chain);
    for jump in jumps_to(&listing, from, chain) {
        let spec = rule_args(&jump);
        Cmd::new(bin).args(["-t", table, "-D"]).args(spec).run()?;
    }
    if !lines.is_empty() {
        Cmd::new(bin).args(["-t", table, "-F", chain]).run()?;
        Cmd::new(bin).args(["-t", table, "-X", chain]).run()?;
    }
    Ok(())
}

/// `nft -j list table FAMILY weft`, turned into a digest.
fn observe_nft(family: Family) -> Result<Option<String>, KernelError> {
    let fam = nft_family(family);
    let cmd = Cmd::new("nft").args(["-j", "list", "table", fam, NFT_TABLE]);
    let out = match cmd.output() {
        Ok(out) => out,
        // No nft at all: nothing of weft's can be in nftables.
        Err(KernelError::Spawn { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    if !out.status.success() {
        // No table ("No such file or directory"), or no working nftables at all: either way
        // weft has no rules there. Should the table exist after all, replacing it is atomic.
        return Ok(None);
    }
    let listing = parse_nft_json(&String::from_utf8_lossy(&out.stdout)).map_err(|reason| {
        KernelError::NftOutput {
            command: cmd.line(),
            reason,
        }
    })?;
    let comment = match listing.comment.clone() {
        Some(comment) => Some(comment),
        // nft before 1.0.7 leaves the table comment out of its JSON; the text listing has it.
        None => match Cmd::new("nft")
            .args(["list", "table", fam, NFT_TABLE])
            .run()
        {
            Ok(text) => nft_text_comment(&text),
            // Deleted between the two listings: it is gone now.
            Err(KernelError::Command { .. }) => return Ok(None),
            Err(e) => return Err(e),
        },
    };
    Ok(Some(nft_digest(comment.as_deref(), &listing)))
}

/// What `nft -j list table` says about a table: its comment (when nft prints it) and how many
/// rules each chain has.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct NftListing {
    comment: Option<String>,
    chains: Vec<(String, usize)>,
}

/// Parses `nft -j list table` output.
fn parse_nft_json(text: &str) -> Result<NftListing, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let items = value
        .get("nftables")
        .and_then(|v| v.as_array())
        .ok_or("no \"nftables\" array")?;
    let mut listing = NftListing::default();
    for item in items {
        if let Some(table) = item.get("table") {
            listing.comment = table
                .get("comment")
                .and_then(|c| c.as_str())
                .map(str::to_owned);
        } else if let Some(chain) = item.get("chain") {
            let name = chain
                .get("name")
                .and_then(|n| n.as_str())
                .ok_or("a chain without a name")?;
            listing.chains.push((name.to_owned(), 0));
        } else if let Some(rule) = item.get("rule") {
            let chain = rule
                .get("chain")
                .and_then(|n| n.as_str())
                .ok_or("a rule without a chain")?;
            match listing.chains.iter_mut().find(|(name, _)| name == chain) {
                Some((_, count)) => *count += 1,
                None => listing.chains.push((chain.to_owned(), 1)),
            }
        }
    }
    Ok(listing)
}

/// The table comment in `nft list table` text output.
fn nft_text_comment(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find_map(|line| line.strip_prefix("comment \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .map(str::to_owned)
}

/// The digest of an observed nftables table: its comment when the chains hold the rule counts
/// the comment promises, else a value that no desired table has.
fn nft_digest(comment: Option<&str>, listing: &NftListing) -> String {
    let count = |name: &str| {
        listing
            .chains
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, c)| *c)
    };
    let known = listing
        .chains
        .iter()
        .all(|(name, _)| name == "forward" || name == "postrouting");
    match comment.and_then(|c| Some((c, nft_expected_rule_counts(c)?))) {
        Some((comment, counts)) if known && counts == (count("forward"), count("postrouting")) => {
            comment.to_owned()
        }
        _ => format!(
            "{TAMPERED} comment {:?}, chains {:?}",
            comment.unwrap_or(""),
            listing.chains
        ),
    }
}

/// `iptables -t nat -S` and `iptables -t filter -S` (or `ip6tables`), turned into a digest.
fn observe_iptables(family: Family) -> Result<Option<String>, KernelError> {
    let bin = iptables_binary(family);
    let list = |table: &str| -> Result<Option<String>, KernelError> {
        match Cmd::new(bin).args(["-t", table, "-S"]).run() {
            Ok(text) => Ok(Some(text)),
            // No iptables binary, or no such table in this kernel: nothing of weft's there.
            Err(KernelError::Spawn { .. } | KernelError::Command { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    };
    let (Some(nat), Some(filter)) = (list("nat")?, list("filter")?) else {
        return Ok(None);
    };
    Ok(iptables_digest(&nat, &filter))
}

/// The digest of flannel's chains in `iptables -S` listings of the nat and filter tables, the
/// way `weft_fabric::firewall` builds the desired one; `None` when neither chain exists.
fn iptables_digest(nat: &str, filter: &str) -> Option<String> {
    let masq = chain_lines(nat, IPT_MASQ_CHAIN);
    let forward = chain_lines(filter, IPT_FORWARD_CHAIN);
    if masq.is_empty() && forward.is_empty() {
        return None;
    }
    let mut lines: Vec<String> = masq
        .iter()
        .chain(&forward)
        .map(|l| (*l).to_owned())
        .collect();
    for (table, jump) in iptables_jumps(!masq.is_empty()) {
        let listing = if table == "nat" { nat } else { filter };
        if !listing.lines().any(|l| l == jump) {
            lines.push(format!("missing jump: {jump}"));
        }
    }
    Some(lines.join("\n"))
}

/// The `-N CHAIN` and `-A CHAIN ...` lines of `chain` in an `iptables -S` listing.
fn chain_lines<'a>(listing: &'a str, chain: &str) -> Vec<&'a str> {
    let new = format!("-N {chain}");
    let append = format!("-A {chain} ");
    listing
        .lines()
        .filter(|l| *l == new || l.starts_with(&append))
        .collect()
}

/// The rules in `from` that jump to `chain`, as `iptables -S` prints them.
fn jumps_to(listing: &str, from: &str, chain: &str) -> Vec<String> {
    let append = format!("-A {from} ");
    let target = format!(" -j {chain}");
    listing
        .lines()
        .filter(|l| l.starts_with(&append) && l.ends_with(&target))
        .map(str::to_owned)
        .collect()
}

/// Splits an `iptables -S` rule (`-A CHAIN spec...`) into the arguments after `-A`, honouring
/// double quotes: `-A X -m comment --comment "a b" -j Y` gives `X -m comment --comment a b -j Y`
/// as five-plus words with `a b` as one.
fn rule_args(rule: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    for c in rule.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    if words.first().is_some_and(|w| w == "-A") {
        words.remove(0);
    }
    words
}
