//! Masquerade and forward rules: flannel's rule set, rendered for nftables (weft's own tables,
//! one atomic transaction) or iptables (flannel's chains through `iptables-restore --noflush`).
//!
//! The rules for a family, with `CLUSTER` the cluster CIDR and `POD` this node's pod CIDR:
//!
//! ```text
//! forward:      saddr CLUSTER accept; daddr CLUSTER accept
//! postrouting:  mark 0x4000/0x4000 return          (kube-proxy already masquerades these)
//!               saddr POD daddr CLUSTER return     (pod to pod is never masqueraded)
//!               saddr CLUSTER daddr POD return
//!               saddr != CLUSTER daddr POD return  (external traffic to a local pod keeps its source)
//!               saddr CLUSTER daddr != MULTICAST masquerade [fully-random]
//!               saddr != CLUSTER daddr CLUSTER masquerade [fully-random]
//! ```
//!
//! Two of flannel's nftables differences are deliberately not copied: weft matches the
//! kube-proxy mark masked (`meta mark & 0x4000 == 0x4000`, like iptables' `0x4000/0x4000`), and
//! the fourth rule is iptables' `! -s CLUSTER -d POD`.

use weft_ipam::{Cidr, Family};

use crate::state::{FirewallTable, MasqMode};

#[cfg(test)]
mod tests;

/// The nftables table name, in family `ip` and `ip6`.
pub const NFT_TABLE: &str = "weft";
/// flannel's iptables masquerade chain (table `nat`).
pub const IPT_MASQ_CHAIN: &str = "FLANNEL-POSTRTG";
/// flannel's iptables forward chain (table `filter`).
pub const IPT_FORWARD_CHAIN: &str = "FLANNEL-FWD";

/// The rules of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilyRules {
    /// The cluster CIDR of the family.
    pub cluster: Cidr,
    /// This node's pod CIDR of the family.
    pub pod: Cidr,
    /// Whether to masquerade (always for IPv4; for IPv6 with `flannel-ipv6-masq`).
    pub masquerade: bool,
    /// Whether `masquerade` uses `fully-random` port selection.
    pub fully_random: bool,
}

/// The nftables family keyword of `family`.
pub fn nft_family(family: Family) -> &'static str {
    match family {
        Family::Ipv4 => "ip",
        Family::Ipv6 => "ip6",
    }
}

/// How many rules each nftables chain holds for the rule set that `comment` describes, as
/// `(forward, postrouting)`, or `None` when the comment is not one of weft's.
///
/// weft-kernel compares these with the rules it finds; a table whose counts differ was changed
/// by someone else and is replaced. (nft 1.0.6, Debian 12's, leaves table comments out of its
/// JSON output: the comment has to be read from `nft list table` text.)
pub fn nft_expected_rule_counts(comment: &str) -> Option<(usize, usize)> {
    let mut words = comment.split(' ');
    if words.next()? != "weft-v1" {
        return None;
    }
    let masq = words.nth(2)?;
    match masq {
        "masq" => Some((2, 6)),
        "nomasq" => Some((2, 0)),
        _ => None,
    }
}

// === impl FamilyRules ===

impl FamilyRules {
    /// The firewall table that installs these rules with `mode`.
    pub fn table(&self, mode: MasqMode) -> FirewallTable {
        match mode {
            MasqMode::Nftables => FirewallTable {
                digest: self.nft_comment(),
                script: self.nft_script(),
            },
            MasqMode::Iptables => FirewallTable {
                digest: self.iptables_digest(),
                script: self.iptables_script(),
            },
        }
    }

    fn family(&self) -> Family {
        self.cluster.family()
    }

    /// The table comment that identifies this rule set (under nftables' 128-byte limit).
    fn nft_comment(&self) -> String {
        format!(
            "weft-v1 {} {} {} {}",
            self.cluster,
            self.pod,
            if self.masquerade { "masq" } else { "nomasq" },
            if self.fully_random {
                "random"
            } else {
                "norandom"
            }
        )
    }

    /// An `nft -f` input that replaces the table atomically (create, delete, create again).
    fn nft_script(&self) -> String {
        let fam = nft_family(self.family());
        let (cluster, pod) = (self.cluster, self.pod);
        let multicast = multicast(self.family());
        let masq = if self.fully_random {
            "masquerade fully-random"
        } else {
            "masquerade"
        };
        let mut s = format!(
            "table {fam} {NFT_TABLE}\ndelete table {fam} {NFT_TABLE}\ntable {fam} {NFT_TABLE} {{\n\
             \tcomment \"{comment}\"\n\
             \tchain forward {{\n\
             \t\ttype filter hook forward priority filter; policy accept;\n\
             \t\t{fam} saddr {cluster} accept\n\
             \t\t{fam} daddr {cluster} accept\n\
             \t}}\n",
            comment = self.nft_comment(),
        );
        if self.masquerade {
            s.push_str(&format!(
                "\tchain postrouting {{\n\
                 \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
                 \t\tmeta mark & 0x4000 == 0x4000 return\n\
                 \t\t{fam} saddr {pod} {fam} daddr {cluster} return\n\
                 \t\t{fam} saddr {cluster} {fam} daddr {pod} return\n\
                 \t\t{fam} saddr != {cluster} {fam} daddr {pod} return\n\
                 \t\t{fam} saddr {cluster} {fam} daddr != {multicast} {masq}\n\
                 \t\t{fam} saddr != {cluster} {fam} daddr {cluster} {masq}\n\
                 \t}}\n"
            ));
        }
        s.push_str("}\n");
        s
    }

    /// flannel's masquerade rules as `iptables -S` prints them.
    fn iptables_masq_rules(&self) -> Vec<String> {
        if !self.masquerade {
            return Vec::new();
        }
        let (cluster, pod) = (self.cluster, self.pod);
        let c = "-m comment --comment \"flanneld masq\"";
        let random = if self.fully_random {
            " --random-fully"
        } else {
            ""
        };
        let multicast = multicast(self.family());
        vec![
            format!("-A {IPT_MASQ_CHAIN} -m mark --mark 0x4000/0x4000 {c} -j RETURN"),
            format!("-A {IPT_MASQ_CHAIN} -s {pod} -d {cluster} {c} -j RETURN"),
            format!("-A {IPT_MASQ_CHAIN} -s {cluster} -d {pod} {c} -j RETURN"),
            format!("-A {IPT_MASQ_CHAIN} ! -s {cluster} -d {pod} {c} -j RETURN"),
            format!("-A {IPT_MASQ_CHAIN} -s {cluster} ! -d {multicast} {c} -j MASQUERADE{random}"),
            format!("-A {IPT_MASQ_CHAIN} ! -s {cluster} -d {cluster} {c} -j MASQUERADE{random}"),
        ]
    }

    /// flannel's forward rules as `iptables -S` prints them.
    fn iptables_forward_rules(&self) -> Vec<String> {
        let c = "-m comment --comment \"flanneld forward\"";
        vec![
            format!("-A {IPT_FORWARD_CHAIN} -s {} {c} -j ACCEPT", self.cluster),
            format!("-A {IPT_FORWARD_CHAIN} -d {} {c} -j ACCEPT", self.cluster),
        ]
    }

    /// What `iptables -t nat -S FLANNEL-POSTRTG` and `iptables -t filter -S FLANNEL-FWD` print
    /// for these rules, one after the other.
    ///
    /// weft-kernel builds the observed digest the same way and adds a line for each missing
    /// jump from `POSTROUTING`/`FORWARD`, so a missing jump never matches.
    fn iptables_digest(&self) -> String {
        let mut lines = Vec::new();
        if self.masquerade {
            lines.push(format!("-N {IPT_MASQ_CHAIN}"));
            lines.extend(self.iptables_masq_rules());
        }
        lines.push(format!("-N {IPT_FORWARD_CHAIN}"));
        lines.extend(self.iptables_forward_rules());
        lines.join("\n")
    }

    /// An `iptables-restore --noflush` input that flushes and refills flannel's chains.
    ///
    /// The jumps from `POSTROUTING` and `FORWARD` are not in it: `-D` of a missing rule fails a
    /// whole restore, so weft-kernel checks for them (`iptables -C`) and appends what is missing.
    fn iptables_script(&self) -> String {
        let mut s = String::new();
        if self.masquerade {
            s.push_str(&format!("*nat\n:{IPT_MASQ_CHAIN} - [0:0]\n"));
            for rule in self.iptables_masq_rules() {
                s.push_str(&rule);
                s.push('\n');
            }
            s.push_str("COMMIT\n");
        }
        s.push_str(&format!("*filter\n:{IPT_FORWARD_CHAIN} - [0:0]\n"));
        for rule in self.iptables_forward_rules() {
            s.push_str(&rule);
            s.push('\n');
        }
        s.push_str("COMMIT\n");
        s
    }
}

/// The jump rules (`table`, rule spec) that send traffic into flannel's iptables chains, as
/// `iptables -S` prints them.
pub fn iptables_jumps(masquerade: bool) -> Vec<(&'static str, String)> {
    let mut jumps = Vec::new();
    if masquerade {
        jumps.push((
            "nat",
            format!("-A POSTROUTING -m comment --comment \"flanneld masq\" -j {IPT_MASQ_CHAIN}"),
        ));
    }
    jumps.push((
        "filter",
        format!("-A FORWARD -m comment --comment \"flanneld forward\" -j {IPT_FORWARD_CHAIN}"),
    ));
    jumps
}

/// The multicast range that is never masqueraded.
fn multicast(family: Family) -> &'static str {
    match family {
        Family::Ipv4 => "224.0.0.0/4",
        Family::Ipv6 => "ff00::/8",
    }
}

/// The command that removes weft's rules of a family, for plan output.
pub(crate) fn delete_command(family: Family, mode: MasqMode) -> String {
    match mode {
        MasqMode::Nftables => format!("nft delete table {} {NFT_TABLE}", nft_family(family)),
        MasqMode::Iptables => format!(
            "{} -t nat -F {IPT_MASQ_CHAIN}; -X {IPT_MASQ_CHAIN}; -t filter -F {IPT_FORWARD_CHAIN}; -X {IPT_FORWARD_CHAIN} (and their jumps)",
            iptables_binary(family)
        ),
    }
}

/// The command that installs weft's rules of a family, for plan output: the whole `nft`
/// script on one line, or the `iptables-restore` input's rules.
pub(crate) fn replace_command(family: Family, mode: MasqMode, table: &FirewallTable) -> String {
    let one_line = |s: &str| {
        s.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    };
    match mode {
        MasqMode::Nftables => {
            // `nft` takes a whole script on its command line once statements end with `;`.
            let script: Vec<String> = table
                .script
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(|l| {
                    if l.ends_with('{') || l.ends_with(';') {
                        l.to_owned()
                    } else {
                        format!("{l};")
                    }
                })
                .collect();
            format!("nft '{}'", script.join(" "))
        }
        MasqMode::Iptables => format!(
            "{}-restore --noflush <<< '{}'",
            iptables_binary(family),
            one_line(&table.script)
        ),
    }
}

/// `iptables` or `ip6tables`.
pub fn iptables_binary(family: Family) -> &'static str {
    match family {
        Family::Ipv4 => "iptables",
        Family::Ipv6 => "ip6tables",
    }
}
