//! Tests of reading weft's rules back: nft listings and `iptables -S` output turned into
//! digests that match the desired ones exactly when the rules are intact.

use weft_fabric::MasqMode;
use weft_fabric::firewall::{FamilyRules, iptables_jumps};
use weft_ipam::Cidr;

use super::{
    NftListing, iptables_digest, jumps_to, nft_digest, nft_text_comment, parse_nft_json, rule_args,
};

fn rules(masquerade: bool) -> FamilyRules {
    FamilyRules {
        cluster: "10.42.0.0/16".parse::<Cidr>().unwrap(),
        pod: "10.42.1.0/24".parse::<Cidr>().unwrap(),
        masquerade,
        fully_random: true,
    }
}

/// What `iptables -S` of the nat and filter tables prints once the fabric's rules and jumps are
/// installed, next to rules of others.
fn listings(rules: &FamilyRules, with_jumps: bool) -> (String, String) {
    let desired = rules.table(MasqMode::Iptables).digest;
    let mut nat =
        String::from("-P PREROUTING ACCEPT\n-P POSTROUTING ACCEPT\n-N KUBE-POSTROUTING\n");
    let mut filter = String::from("-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-A FORWARD -j DOCKER\n");
    if with_jumps {
        for (table, jump) in iptables_jumps(rules.masquerade) {
            let out = if table == "nat" {
                &mut nat
            } else {
                &mut filter
            };
            out.push_str(&jump);
            out.push('\n');
        }
    }
    for line in desired.lines() {
        let out = if line.contains("FLANNEL-POSTRTG") {
            &mut nat
        } else {
            &mut filter
        };
        out.push_str(line);
        out.push('\n');
    }
    (nat, filter)
}

#[test]
fn intact_iptables_rules_match_the_desired_digest() {
    for masquerade in [true, false] {
        let rules = rules(masquerade);
        let (nat, filter) = listings(&rules, true);
        assert_eq!(
            iptables_digest(&nat, &filter).as_deref(),
            Some(rules.table(MasqMode::Iptables).digest.as_str())
        );
    }
}

#[test]
fn a_missing_jump_never_matches() {
    let rules = rules(true);
    let (nat, filter) = listings(&rules, false);
    let digest = iptables_digest(&nat, &filter).unwrap();
    assert_ne!(digest, rules.table(MasqMode::Iptables).digest);
    assert!(digest.contains("missing jump: -A POSTROUTING"), "{digest}");
}

#[test]
fn no_chains_is_no_table() {
    assert_eq!(
        iptables_digest("-P POSTROUTING ACCEPT\n", "-P FORWARD ACCEPT\n"),
        None
    );
}

#[test]
fn rule_args_keep_quoted_words_together() {
    assert_eq!(
        rule_args("-A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG"),
        [
            "POSTROUTING",
            "-m",
            "comment",
            "--comment",
            "flanneld masq",
            "-j",
            "FLANNEL-POSTRTG"
        ]
    );
}

#[test]
fn jumps_are_found_by_target() {
    let listing = "-P FORWARD ACCEPT\n-A FORWARD -m comment --comment \"flanneld forward\" -j FLANNEL-FWD\n-A FORWARD -j OTHER\n";
    assert_eq!(
        jumps_to(listing, "FORWARD", "FLANNEL-FWD"),
        ["-A FORWARD -m comment --comment \"flanneld forward\" -j FLANNEL-FWD"]
    );
}

/// `nft -j list table ip weft` of nft 1.0.6 (no table comment), trimmed to what is read.
const NFT_JSON: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
 {"table": {"family": "ip", "name": "weft", "handle": 2}},
 {"chain": {"family": "ip", "table": "weft", "name": "forward", "handle": 1}},
 {"chain": {"family": "ip", "table": "weft", "name": "postrouting", "handle": 2}},
 {"rule": {"family": "ip", "table": "weft", "chain": "forward", "handle": 3, "expr": []}},
 {"rule": {"family": "ip", "table": "weft", "chain": "forward", "handle": 4, "expr": []}},
 {"rule": {"family": "ip", "table": "weft", "chain": "postrouting", "handle": 5, "expr": []}},
 {"rule": {"family": "ip", "table": "weft", "chain": "postrouting", "handle": 6, "expr": []}},
 {"rule": {"family": "ip", "table": "weft", "chain": "postrouting", "handle": 7, "expr": []}},
 {"rule": {"family": "ip", "table": "weft", "chain": "postrouting", "handle": 8, "expr": []}},
 {"rule": {"family": "ip", "table": "weft", "chain": "postrouting", "handle": 9, "expr": []}},
 {"rule": {"family": "ip", "table": "weft", "chain": "postrouting", "handle": 10, "expr": []}}]}"#;

#[test]
fn nft_json_counts_rules_per_chain() {
    let listing = parse_nft_json(NFT_JSON).unwrap();
    assert_eq!(listing.comment, None);
    assert_eq!(
        listing.chains,
        [("forward".to_owned(), 2), ("postrouting".to_owned(), 6)]
    );
}

#[test]
fn nft_json_that_is_not_a_listing_is_an_error() {
    assert!(parse_nft_json("{}").is_err());
    assert!(parse_nft_json("not json").is_err());
}

#[test]
fn nft_text_comment_is_the_table_comment() {
    let text = "table ip weft {\n\tcomment \"weft-v1 10.42.0.0/16 10.42.1.0/24 masq random\"\n\tchain forward {\n";
    assert_eq!(
        nft_text_comment(text).as_deref(),
        Some("weft-v1 10.42.0.0/16 10.42.1.0/24 masq random")
    );
}

#[test]
fn an_intact_nft_table_has_the_desired_digest() {
    let desired = rules(true).table(MasqMode::Nftables).digest;
    let listing = parse_nft_json(NFT_JSON).unwrap();
    assert_eq!(nft_digest(Some(&desired), &listing), desired);
}

#[test]
fn a_changed_nft_table_never_matches() {
    let desired = rules(true).table(MasqMode::Nftables).digest;
    let mut listing = parse_nft_json(NFT_JSON).unwrap();
    listing.chains[1].1 = 5;
    assert_ne!(nft_digest(Some(&desired), &listing), desired);
    let extra = NftListing {
        comment: None,
        chains: vec![
            ("forward".to_owned(), 2),
            ("postrouting".to_owned(), 6),
            ("mine".to_owned(), 0),
        ],
    };
    assert_ne!(nft_digest(Some(&desired), &extra), desired);
    assert_ne!(nft_digest(None, &listing), desired);
    assert_ne!(nft_digest(Some("someone else's table"), &listing), desired);
}
