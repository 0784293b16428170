//! Tests of the masquerade and forward rules.

use weft_ipam::{Cidr, Family};

use crate::firewall::{FamilyRules, iptables_jumps, nft_expected_rule_counts};
use crate::{MasqMode, Op};

fn rules(masquerade: bool) -> FamilyRules {
    FamilyRules {
        cluster: "10.42.0.0/16".parse::<Cidr>().unwrap(),
        pod: "10.42.1.0/24".parse::<Cidr>().unwrap(),
        masquerade,
        fully_random: true,
    }
}

#[test]
fn nft_script_replaces_the_table_atomically() {
    let table = rules(true).table(MasqMode::Nftables);
    assert_eq!(
        table.digest,
        "weft-v1 10.42.0.0/16 10.42.1.0/24 masq random"
    );
    assert_eq!(
        table.script,
        "table ip weft\n\
         delete table ip weft\n\
         table ip weft {\n\
         \tcomment \"weft-v1 10.42.0.0/16 10.42.1.0/24 masq random\"\n\
         \tchain forward {\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tip saddr 10.42.0.0/16 accept\n\
         \t\tip daddr 10.42.0.0/16 accept\n\
         \t}\n\
         \tchain postrouting {\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tmeta mark & 0x4000 == 0x4000 return\n\
         \t\tip saddr 10.42.1.0/24 ip daddr 10.42.0.0/16 return\n\
         \t\tip saddr 10.42.0.0/16 ip daddr 10.42.1.0/24 return\n\
         \t\tip saddr != 10.42.0.0/16 ip daddr 10.42.1.0/24 return\n\
         \t\tip saddr 10.42.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random\n\
         \t\tip saddr != 10.42.0.0/16 ip daddr 10.42.0.0/16 masquerade fully-random\n\
         \t}\n\
         }\n"
    );
    assert_eq!(nft_expected_rule_counts(&table.digest), Some((2, 6)));
}

#[test]
fn ipv6_without_masq_only_forwards() {
    let r = FamilyRules {
        cluster: "fd00:42::/56".parse().unwrap(),
        pod: "fd00:42:0:1::/64".parse().unwrap(),
        masquerade: false,
        fully_random: false,
    };
    let table = r.table(MasqMode::Nftables);
    assert!(table.script.contains("ip6 saddr fd00:42::/56 accept"));
    assert!(!table.script.contains("postrouting"));
    assert_eq!(nft_expected_rule_counts(&table.digest), Some((2, 0)));
    assert_eq!(nft_expected_rule_counts("someone else's table"), None);
    let masq = FamilyRules {
        masquerade: true,
        ..r
    }
    .table(MasqMode::Nftables);
    assert!(
        masq.script
            .contains("ip6 saddr fd00:42::/56 ip6 daddr != ff00::/8 masquerade\n")
    );
}

#[test]
fn iptables_rules_are_flannels() {
    let table = rules(true).table(MasqMode::Iptables);
    assert_eq!(
        table.script,
        "*nat\n\
         :FLANNEL-POSTRTG - [0:0]\n\
         -A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment \"flanneld masq\" -j RETURN\n\
         -A FLANNEL-POSTRTG -s 10.42.1.0/24 -d 10.42.0.0/16 -m comment --comment \"flanneld masq\" -j RETURN\n\
         -A FLANNEL-POSTRTG -s 10.42.0.0/16 -d 10.42.1.0/24 -m comment --comment \"flanneld masq\" -j RETURN\n\
         -A FLANNEL-POSTRTG ! -s 10.42.0.0/16 -d 10.42.1.0/24 -m comment --comment \"flanneld masq\" -j RETURN\n\
         -A FLANNEL-POSTRTG -s 10.42.0.0/16 ! -d 224.0.0.0/4 -m comment --comment \"flanneld masq\" -j MASQUERADE --random-fully\n\
         -A FLANNEL-POSTRTG ! -s 10.42.0.0/16 -d 10.42.0.0/16 -m comment --comment \"flanneld masq\" -j MASQUERADE --random-fully\n\
         COMMIT\n\
         *filter\n\
         :FLANNEL-FWD - [0:0]\n\
         -A FLANNEL-FWD -s 10.42.0.0/16 -m comment --comment \"flanneld forward\" -j ACCEPT\n\
         -A FLANNEL-FWD -d 10.42.0.0/16 -m comment --comment \"flanneld forward\" -j ACCEPT\n\
         COMMIT\n"
    );
    assert!(
        table
            .digest
            .starts_with("-N FLANNEL-POSTRTG\n-A FLANNEL-POSTRTG -m mark")
    );
    assert!(table.digest.ends_with("-N FLANNEL-FWD\n-A FLANNEL-FWD -s 10.42.0.0/16 -m comment --comment \"flanneld forward\" -j ACCEPT\n-A FLANNEL-FWD -d 10.42.0.0/16 -m comment --comment \"flanneld forward\" -j ACCEPT"));
    assert_eq!(iptables_jumps(false).len(), 1);
    assert_eq!(
        iptables_jumps(true)[0].1,
        "-A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG"
    );
}

#[test]
fn firewall_ops_print_as_commands() {
    let table = rules(false).table(MasqMode::Nftables);
    let op = Op::ReplaceFirewall {
        family: Family::Ipv4,
        mode: MasqMode::Nftables,
        table,
    };
    assert_eq!(
        op.to_string(),
        "nft 'table ip weft; delete table ip weft; table ip weft { comment \"weft-v1 10.42.0.0/16 10.42.1.0/24 nomasq random\"; chain forward { type filter hook forward priority filter; policy accept; ip saddr 10.42.0.0/16 accept; ip daddr 10.42.0.0/16 accept; }; };'"
    );
    let del = Op::DeleteFirewall {
        family: Family::Ipv6,
        mode: MasqMode::Nftables,
    };
    assert_eq!(del.to_string(), "nft delete table ip6 weft");
}
