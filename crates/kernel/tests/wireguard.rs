//! Privileged tests of the wireguard-native backend on the userspace implementation (this
//! kernel has no WireGuard module), in network namespaces (feature `netns-tests`, root): pods on
//! two and three nodes reach each other for IPv4, IPv6 and dual-stack; the underlay carries
//! nothing but WireGuard's UDP between the nodes; a removed node's peer goes; an agent restart
//! keeps its key and its peers' sessions; agents switch between vxlan and wireguard-native
//! with a restart; and weft's device works with Debian's wireguard-go as the peer.
//!
//! The `kernel_wireguard` tests at the end run the same on the kernel's WireGuard module; they
//! are ignored here and run in the VM lane (`cargo xtask e2e --vm --netns-tests`).
//!
//! Run with `cargo test -p weft-kernel --features netns-tests --test wireguard`.

#![cfg(feature = "netns-tests")]

mod support;

use std::time::{Duration, Instant};

use futures::FutureExt as _;
use support::{Cluster, Kind, Stack, ping, pings, tcp};
use weft_fabric::{LinkKind, MasqMode, Op, WgImplementation};
use weft_ipam::Family;
use weft_kernel::netns::Namespace;
use weft_kernel::{Mirror, Notice, Resync, Scope, Wireguard};

/// Pings between every pair of pods, in every family of the cluster.
fn ping_all(cluster: &Cluster) {
    for a in &cluster.nodes {
        for b in &cluster.nodes {
            if a.n != b.n {
                for family in cluster.stack.families() {
                    ping(&a.pod, b.pod_ip(family));
                }
            }
        }
    }
}

/// A line over TCP between every pair of pods, in every family; the receiver sees the sender's
/// pod address.
fn tcp_all(cluster: &Cluster) {
    for a in &cluster.nodes {
        for b in &cluster.nodes {
            if a.n != b.n {
                for family in cluster.stack.families() {
                    assert_eq!(tcp(&a.pod, &b.pod, b.pod_ip(family)), a.pod_ip(family));
                }
            }
        }
    }
}

#[test]
fn ipv4_two_nodes() {
    let cluster = Cluster::new(Kind::Wireguard, Stack::V4, MasqMode::Nftables, &[0, 0]);
    ping_all(&cluster);
    tcp_all(&cluster);
    let converged = cluster.converge(0);
    assert!(converged.plan.is_empty(), "{}", converged.plan);
    let link = &converged.after.links["flannel-wg"];
    assert_eq!(link.mtu, 1420);
    assert!(
        matches!(
            link.kind,
            LinkKind::Wireguard {
                implementation: WgImplementation::Userspace,
                listen_port: 51820,
                public_key,
            } if public_key == cluster.nodes[0].wg_key.public_key()
        ),
        "{link:?}"
    );
    let routes = cluster.nodes[0]
        .ns
        .ip(&["route", "show", "proto", "87"])
        .unwrap();
    assert!(
        routes.contains("10.42.0.0/16 dev flannel-wg scope link"),
        "{routes}"
    );
}

#[test]
fn ipv6_two_nodes() {
    let cluster = Cluster::new(Kind::Wireguard, Stack::V6, MasqMode::Nftables, &[0, 0]);
    ping_all(&cluster);
    tcp_all(&cluster);
    let node = &cluster.nodes[1];
    let links = node.ns.ip(&["-o", "link", "show"]).unwrap();
    assert!(links.contains("flannel-wg-v6:"), "{links}");
    assert!(!links.contains("flannel-wg:"), "{links}");
    let routes = node.ns.ip(&["-6", "route", "show", "proto", "87"]).unwrap();
    assert!(routes.contains("fd42::/56 dev flannel-wg-v6"), "{routes}");
    assert!(cluster.pending(1).is_empty());
}

#[test]
fn dual_stack_three_nodes_only_wireguard_crosses_the_underlay() {
    let cluster = Cluster::new(Kind::Wireguard, Stack::Dual, MasqMode::Nftables, &[0, 0, 0]);
    ping_all(&cluster);
    let counters = Counters::install(&cluster.underlay);
    tcp_all(&cluster);
    ping_all(&cluster);
    let (wg, pod, other) = counters.read();
    assert!(wg >= 24, "only {wg} WireGuard packets crossed the underlay");
    assert_eq!(
        pod, 0,
        "{pod} packets with pod addresses crossed the underlay in the clear"
    );
    assert_eq!(other, 0, "{other} other IP packets crossed the underlay");

    for node in &cluster.nodes {
        let links = node.ns.ip(&["link", "show"]).unwrap();
        assert!(links.contains("flannel-wg:") && links.contains("flannel-wg-v6:"));
        assert!(links.contains("mtu 1420"), "{links}");
    }
    let state = cluster.converge(0).after;
    assert_eq!(state.wg_peers.len(), 4, "{:?}", state.wg_peers);
}

#[test]
fn removed_node_loses_its_peer_only() {
    let cluster = Cluster::new(Kind::Wireguard, Stack::V4, MasqMode::Nftables, &[0, 0, 0]);
    ping_all(&cluster);
    let gone = cluster.nodes[2].wg_key.public_key();
    let remaining: Vec<_> = cluster.leases().into_iter().take(2).collect();
    let removed = cluster.converge_with(0, &remaining);
    assert_eq!(
        removed.plan.ops,
        [Op::DeleteWgPeer {
            dev: "flannel-wg".into(),
            public_key: gone
        }]
    );
    assert_eq!(removed.after.wg_peers.len(), 1);
    assert!(!pings(
        &cluster.nodes[0].pod,
        cluster.nodes[2].pod_ip(Family::Ipv4)
    ));
    ping(&cluster.nodes[0].pod, cluster.nodes[1].pod_ip(Family::Ipv4));
    // And it comes back as one peer.
    let back = cluster.converge(0);
    assert_eq!(back.plan.len(), 1, "{}", back.plan);
    ping(&cluster.nodes[0].pod, cluster.nodes[2].pod_ip(Family::Ipv4));

    // Cleanup stops the device and removes every object.
    let (done, left) = cluster.cleanup(0);
    assert!(
        done.ops
            .iter()
            .any(|op| matches!(op, Op::DeleteLink { name } if name == "flannel-wg"))
    );
    assert!(
        left.links.is_empty() && left.routes.is_empty() && left.wg_peers.is_empty(),
        "{left:?}"
    );
    assert!(cluster.nodes[0].wg.userspace_devices().is_empty());
}

#[test]
fn restart_keeps_the_key_and_the_peers_sessions() {
    let mut cluster = Cluster::new(Kind::Wireguard, Stack::V4, MasqMode::Nftables, &[0, 0]);
    ping_all(&cluster);
    let before = handshake(&cluster, 1, 0);
    // Handshake times have a resolution the restart must outlast.
    std::thread::sleep(Duration::from_millis(1100));

    // The agent of node 1 stops: its device and TUN go (the kernel unregisters the TUN a few
    // milliseconds after its last file descriptor closes).
    cluster.restart(0);
    let gone = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        cluster.nodes[0].link_index("flannel-wg").is_none()
    });
    assert!(gone, "the TUN of a stopped device is still there");
    // It starts again: the device comes back with the same key and the peer.
    let again = cluster.converge(0);
    let adds: Vec<&Op> = again
        .plan
        .ops
        .iter()
        .filter(|op| matches!(op, Op::AddLink(_) | Op::ReplaceWgPeer { .. }))
        .collect();
    assert_eq!(adds.len(), 2, "{}", again.plan);
    assert!(matches!(
        &again.after.links["flannel-wg"].kind,
        LinkKind::Wireguard { public_key, .. } if *public_key == cluster.nodes[0].wg_key.public_key()
    ));
    // Node 2 keeps its peer entry as it was: nothing to do there.
    assert!(cluster.pending(1).is_empty(), "{}", cluster.pending(1));
    let started = Instant::now();
    ping(&cluster.nodes[0].pod, cluster.nodes[1].pod_ip(Family::Ipv4));
    assert!(started.elapsed() < Duration::from_secs(3));
    tcp_all(&cluster);
    let after = handshake(&cluster, 1, 0);
    assert!(
        after > before,
        "node 2 saw no new handshake from node 1: {before:?} then {after:?}"
    );
    assert!(cluster.pending(0).is_empty());
}

#[test]
fn another_process_of_the_agent_observes_its_devices() {
    let cluster = Cluster::new(Kind::Wireguard, Stack::Dual, MasqMode::Nftables, &[0, 0]);
    let node = &cluster.nodes[0];
    let daemon = cluster.converge(0).after;
    // `weft-agent plan` beside the daemon: the same data dir, no devices of its own.
    let plan_process = Wireguard::new();
    plan_process.set_socket_dir(cluster.dir.path.join("agent-1").join("wireguard"));
    let seen = node
        .ns
        .run(move |kernel| async move {
            kernel
                .with_wireguard(plan_process)
                .observe(&Scope::weft())
                .await
        })
        .unwrap()
        .unwrap();
    assert_eq!(seen, daemon);
    assert!(matches!(
        seen.links["flannel-wg-v6"].kind,
        LinkKind::Wireguard {
            implementation: WgImplementation::Userspace,
            ..
        }
    ));
    // A process with another directory doesn't take the TUN for a device of its agent.
    let stranger = Wireguard::new();
    stranger.set_socket_dir(cluster.dir.path.join("agent-9").join("wireguard"));
    let seen = node
        .ns
        .run(move |kernel| async move {
            kernel
                .with_wireguard(stranger)
                .observe(&Scope::weft())
                .await
        })
        .unwrap()
        .unwrap();
    assert!(matches!(
        seen.links["flannel-wg"].kind,
        LinkKind::Other { .. }
    ));
    // The socket answers nothing but `get=1`.
    let path = cluster.dir.path.join("agent-1/wireguard/flannel-wg.sock");
    let mut conn = std::os::unix::net::UnixStream::connect(&path).unwrap();
    std::io::Write::write_all(&mut conn, b"set=1\nlisten_port=1\n\n").unwrap();
    let mut reply = String::new();
    std::io::Read::read_to_string(&mut conn, &mut reply).unwrap();
    assert_eq!(reply, "errno=1\n\n");
    assert!(cluster.pending(0).is_empty());
}

#[test]
fn stale_tun_under_the_name_is_replaced() {
    let cluster = Cluster::new(Kind::Vxlan, Stack::V4, MasqMode::Nftables, &[0, 0]);
    let mut cluster = cluster;
    // A persistent TUN named like weft's device (a crashed agent's, or someone else's).
    cluster.nodes[0]
        .ns
        .ip(&["tuntap", "add", "flannel-wg", "mode", "tun"])
        .unwrap();
    let observed = cluster.converge(1).after;
    assert!(!observed.links.contains_key("flannel-wg"));
    cluster.switch(1, Kind::Wireguard);
    let switched = cluster.switch(0, Kind::Wireguard);
    assert!(
        matches!(&switched.plan.ops[..2], [Op::DeleteLink { name }, _] if name == "flannel-wg")
            || switched
                .plan
                .ops
                .iter()
                .any(|op| matches!(op, Op::DeleteLink { name } if name == "flannel-wg")),
        "{}",
        switched.plan
    );
    cluster.converge(1);
    ping_all(&cluster);
    assert!(cluster.pending(0).is_empty(), "{}", cluster.pending(0));
}

#[test]
fn backend_switch_vxlan_wireguard_vxlan() {
    let mut cluster = Cluster::new(Kind::Vxlan, Stack::Dual, MasqMode::Nftables, &[0, 0]);
    ping_all(&cluster);

    // vxlan -> wireguard-native: each agent restarts with the new backend; when both have,
    // pods reach each other again.
    for i in 0..2 {
        let switched = cluster.switch(i, Kind::Wireguard);
        let text = switched.plan.to_string();
        assert!(text.contains("ip link del flannel.1\n"), "{text}");
        assert!(text.contains("ip link del flannel-v6.1\n"), "{text}");
        assert!(text.contains("ip link add flannel-wg "), "{text}");
    }
    for i in 0..2 {
        cluster.converge(i);
        let after = cluster.converge(i).after;
        assert!(!after.links.contains_key("flannel.1"));
        assert!(after.fdb.is_empty() && after.neighbours.is_empty());
        assert_eq!(after.wg_peers.len(), 2);
    }
    ping_all(&cluster);
    tcp_all(&cluster);

    // And back to vxlan.
    for i in 0..2 {
        let switched = cluster.switch(i, Kind::Vxlan);
        assert!(
            switched.plan.to_string().contains("ip link add flannel.1 "),
            "{}",
            switched.plan
        );
        assert!(cluster.nodes[i].wg.userspace_devices().is_empty());
    }
    for i in 0..2 {
        cluster.converge(i);
        let after = cluster.converge(i).after;
        assert!(!after.links.contains_key("flannel-wg"));
        assert!(after.wg_peers.is_empty());
    }
    ping_all(&cluster);
    tcp_all(&cluster);
}

/// weft's userspace device and Debian's wireguard-go (configured with `wg`) complete a
/// handshake and move TCP both ways: a line each way, then 8 MiB each way, which cross as
/// TSO segments split into GSO runs on weft's side and coalesce again.
#[test]
fn interoperates_with_wireguard_go() {
    let mut cluster = Cluster::new(Kind::Wireguard, Stack::V4, MasqMode::Nftables, &[0, 0]);
    // Node 2's agent stops; wireguard-go takes its key, port and peer.
    cluster.restart(1);
    let (weft, go) = (&cluster.nodes[0], &cluster.nodes[1]);
    let dev = format!("wgi{}", std::process::id() % 100_000);
    let daemon = go.ns.spawn(&["wireguard-go", "-f", &dev]).unwrap();
    let started = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        go.link_index(&dev).is_some()
    });
    assert!(started, "wireguard-go made no link {dev}");
    let weft_cidr = weft.lease.ipv4_cidr.unwrap().to_string();
    let endpoint = format!("{}:51820", weft.lease.public_ipv4.unwrap());
    let public_key = weft.wg_key.public_key().to_string();
    go.ns
        .exec_with(
            &[
                "wg",
                "set",
                &dev,
                "private-key",
                "/dev/stdin",
                "listen-port",
                "51820",
                "peer",
                &public_key,
                "endpoint",
                &endpoint,
                "allowed-ips",
                &weft_cidr,
            ],
            &[],
            &go.wg_key.to_base64(),
        )
        .unwrap();
    go.ns
        .ip(&["link", "set", &dev, "mtu", "1420", "up"])
        .unwrap();
    go.ns
        .ip(&["route", "replace", &weft_cidr, "dev", &dev])
        .unwrap();

    let (weft_ip, go_ip) = (weft.pod_ip(Family::Ipv4), go.pod_ip(Family::Ipv4));
    ping(&weft.pod, go_ip);
    assert_eq!(tcp(&weft.pod, &go.pod, go_ip), weft_ip);
    assert_eq!(tcp(&go.pod, &weft.pod, weft_ip), go_ip);
    assert_eq!(bulk(&weft.pod, &go.pod, go_ip), BULK);
    assert_eq!(bulk(&go.pod, &weft.pod, weft_ip), BULK);
    let handshakes = cluster.nodes[0]
        .wg
        .latest_handshakes("flannel-wg")
        .unwrap()
        .unwrap();
    assert!(
        matches!(&handshakes[..], [(key, Some(_))] if *key == cluster.nodes[1].wg_key.public_key()),
        "{handshakes:?}"
    );
    drop(daemon);
}

/// Bytes of a bulk transfer.
const BULK: usize = 8 << 20;

/// Sends [`BULK`] zero bytes over TCP from `from` to `to` in `to_ns`; the bytes that arrived
/// within 30 seconds.
fn bulk(from: &Namespace, to_ns: &Namespace, to: std::net::IpAddr) -> usize {
    let receiver = to_ns
        .spawn(&[
            "timeout",
            "30",
            "sh",
            "-c",
            "socat -u TCP4-LISTEN:7001,reuseaddr STDOUT | wc -c",
        ])
        .unwrap();
    let listening = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        to_ns
            .exec(&["ss", "-Hltn", "sport", "=", ":7001"])
            .is_ok_and(|out| !out.trim().is_empty())
    });
    assert!(listening, "socat does not listen in {}", to_ns.name());
    let send = format!("head -c {BULK} /dev/zero | socat -u STDIN TCP4:{to}:7001");
    // A transfer that stalls ends with the timeout; the count below tells.
    let _ = from.exec(&["timeout", "30", "sh", "-c", &send]);
    let out = receiver.finish(Duration::from_secs(35)).unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// When node `i`'s device last completed a handshake with node `peer` (both 0-based).
fn handshake(cluster: &Cluster, i: usize, peer: usize) -> std::time::SystemTime {
    let key = cluster.nodes[peer].wg_key.public_key();
    cluster.nodes[i]
        .wg
        .latest_handshakes("flannel-wg")
        .expect("a userspace device")
        .unwrap()
        .into_iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, at)| at)
        .expect("a handshake with the peer")
}

/// nftables counters on the underlay's bridges: WireGuard's UDP, packets with pod addresses in
/// the clear, and any other IP packet (ICMPv6, which neighbour discovery needs, aside).
struct Counters<'a> {
    ns: &'a Namespace,
}

impl<'a> Counters<'a> {
    fn install(ns: &'a Namespace) -> Counters<'a> {
        let script = "table bridge weftcount {\n\
             counter wg {}\n\
             counter pod {}\n\
             counter other {}\n\
             chain forward {\n\
               type filter hook forward priority 0; policy accept;\n\
               ip saddr 10.42.0.0/16 counter name pod\n\
               ip daddr 10.42.0.0/16 counter name pod\n\
               ip6 saddr fd42::/56 counter name pod\n\
               ip6 daddr fd42::/56 counter name pod\n\
               meta l4proto udp udp dport { 51820, 51821 } counter name wg accept\n\
               meta l4proto ipv6-icmp accept\n\
               meta protocol { ip, ip6 } counter name other\n\
             }\n\
           }\n";
        ns.exec_with(&["nft", "-f", "-"], &[], script).unwrap();
        Counters { ns }
    }

    /// (WireGuard, pod, other) packet counts.
    fn read(&self) -> (u64, u64, u64) {
        let count = |name: &str| -> u64 {
            let out = self
                .ns
                .exec(&["nft", "list", "counter", "bridge", "weftcount", name])
                .unwrap();
            out.split_whitespace()
                .skip_while(|w| *w != "packets")
                .nth(1)
                .and_then(|w| w.parse().ok())
                .unwrap_or_else(|| panic!("no packet count in {out}"))
        };
        (count("wg"), count("pod"), count("other"))
    }
}

/// flannel-conf's PSK, ListenPort, ListenPortV6 and PersistentKeepaliveInterval on userspace
/// devices: read back from each device, every peer has the key and the keepalive, the devices
/// listen on the ports, pods reach each other in both families, and a second converge changes
/// nothing (the key read back counts as the one held).
#[test]
fn preshared_key_ports_and_keepalive_are_on_every_peer() {
    let psk = [7u8; 32];
    let options = support::WgOptions {
        keepalive: 5,
        listen_ports: (51000, 51001),
        psk: Some(psk),
        mode: weft_fabric::WgMode::Separate,
        ..support::WgOptions::default()
    };
    let cluster = Cluster::with_wireguard(Stack::Dual, &[0, 0], options);
    ping_all(&cluster);
    let hex: String = psk.iter().map(|b| format!("{b:02x}")).collect();
    for (i, node) in cluster.nodes.iter().enumerate() {
        for (dev, port) in [("flannel-wg", 51000), ("flannel-wg-v6", 51001)] {
            let text = device_text(&cluster, node.n, dev);
            assert!(text.contains(&format!("listen_port={port}\n")), "{text}");
            assert_eq!(
                text.matches(&format!("preshared_key={hex}\n")).count(),
                1,
                "{text}"
            );
            assert_eq!(
                text.matches("persistent_keepalive_interval=5\n").count(),
                1,
                "{text}"
            );
        }
        let again = cluster.converge(i);
        assert!(again.plan.is_empty(), "{}", again.plan);
        assert!(
            again
                .after
                .wg_peers
                .values()
                .all(|p| p.preshared_key && p.keepalive == 5)
        );
    }
}

/// What userspace device `dev` of node `n` reports (`get=1` on its read-only socket in the
/// agent's data dir, as `wg show` would ask).
fn device_text(cluster: &Cluster, n: u8, dev: &str) -> String {
    use std::io::{Read as _, Write as _};
    let path = cluster
        .dir
        .path
        .join(format!("agent-{n}"))
        .join("wireguard")
        .join(format!("{dev}.sock"));
    let mut conn = std::os::unix::net::UnixStream::connect(&path).unwrap();
    conn.write_all(b"get=1\n").unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    assert!(
        text.ends_with("errno=0\n\n") || text.contains("errno=0"),
        "{text}"
    );
    text
}

/// Mode auto on a dual-stack cluster: one device, `flannel-wg`, carries both families; each
/// peer has both pod CIDRs and an IPv4 endpoint (the nodes' IPv4 addresses are public), and
/// pods reach each other over both families.
#[test]
fn mode_auto_one_device_for_both_families() {
    let options = support::WgOptions {
        mode: weft_fabric::WgMode::Auto,
        ..support::WgOptions::default()
    };
    let cluster = Cluster::with_wireguard(Stack::Dual, &[0, 0, 0], options);
    ping_all(&cluster);
    tcp_all(&cluster);
    let converged = cluster.converge(0);
    assert!(converged.plan.is_empty(), "{}", converged.plan);
    assert!(!converged.after.links.contains_key("flannel-wg-v6"));
    let peers: Vec<_> = converged.after.wg_peers.iter().collect();
    assert_eq!(peers.len(), 2);
    for ((dev, _), peer) in peers {
        assert_eq!(dev, "flannel-wg");
        assert_eq!(peer.allowed_ips.len(), 2, "{peer:?}");
        assert!(peer.endpoint.is_ipv4(), "{peer:?}");
    }
}

// === The kernel's WireGuard (the VM lane) ===
//
// This machine's kernel has no WireGuard module, so these are ignored here; `cargo xtask e2e
// --vm --netns-tests` runs them (`--ignored kernel_wireguard`) inside a VM that boots Debian's
// kernel, where weft-kernel programs the module through generic netlink.

/// K3s's options, on devices of the kernel's WireGuard.
fn kernel_devices() -> support::WgOptions {
    support::WgOptions {
        implementation: WgImplementation::Kernel,
        ..support::WgOptions::default()
    }
}

/// `wg show DEV WHAT` in node `n`'s namespace (1-based), one line per peer.
fn wg_show(cluster: &Cluster, n: usize, dev: &str, what: &str) -> String {
    cluster.nodes[n - 1]
        .ns
        .exec(&["wg", "show", dev, what])
        .unwrap()
}

#[test]
#[ignore = "needs the kernel's WireGuard module: `cargo xtask e2e --vm --netns-tests` runs it"]
fn kernel_wireguard_dual_stack_pods_reach_each_other_and_a_restart_changes_nothing() {
    let mut cluster = Cluster::with_wireguard(Stack::Dual, &[0, 0, 0], kernel_devices());
    ping_all(&cluster);
    let counters = Counters::install(&cluster.underlay);
    tcp_all(&cluster);
    let (wg, pod, other) = counters.read();
    assert!(wg >= 12, "only {wg} WireGuard packets crossed the underlay");
    assert_eq!(
        (pod, other),
        (0, 0),
        "pod or other packets crossed the underlay"
    );

    let converged = cluster.converge(0);
    assert!(converged.plan.is_empty(), "{}", converged.plan);
    for (dev, port) in [("flannel-wg", 51820), ("flannel-wg-v6", 51821)] {
        let link = &converged.after.links[dev];
        assert!(
            matches!(
                link.kind,
                LinkKind::Wireguard {
                    implementation: WgImplementation::Kernel,
                    listen_port,
                    public_key,
                } if listen_port == port && public_key == cluster.nodes[0].wg_key.public_key()
            ),
            "{link:?}"
        );
        // The kernel's own answer: a link of kind wireguard, no TUN.
        let details = cluster.nodes[0]
            .ns
            .ip(&["-d", "link", "show", dev])
            .unwrap();
        assert!(details.contains("wireguard"), "{details}");
        assert_eq!(wg_show(&cluster, 1, dev, "peers").lines().count(), 2);
    }
    assert_eq!(converged.after.wg_peers.len(), 4);

    // An agent restart leaves the kernel's devices and peers alone: nothing to do after it.
    cluster.restart(0);
    let again = cluster.converge(0);
    assert!(again.plan.is_empty(), "{}", again.plan);
    ping_all(&cluster);

    // A removed node loses its peer only, and comes back as one peer.
    let gone = cluster.nodes[2].wg_key.public_key();
    let remaining: Vec<_> = cluster.leases().into_iter().take(2).collect();
    let removed = cluster.converge_with(0, &remaining);
    let deleted: Vec<&Op> = removed.plan.ops.iter().collect();
    assert_eq!(
        deleted,
        [
            &Op::DeleteWgPeer {
                dev: "flannel-wg".into(),
                public_key: gone
            },
            &Op::DeleteWgPeer {
                dev: "flannel-wg-v6".into(),
                public_key: gone
            }
        ]
    );
    assert!(!wg_show(&cluster, 1, "flannel-wg", "peers").contains(&gone.to_string()));
    let back = cluster.converge(0);
    assert_eq!(back.plan.len(), 2, "{}", back.plan);
    ping_all(&cluster);

    // Cleanup deletes both devices and everything else.
    let (done, left) = cluster.cleanup(0);
    assert!(
        done.ops
            .iter()
            .any(|op| matches!(op, Op::DeleteLink { name } if name == "flannel-wg-v6"))
    );
    assert!(
        left.links.is_empty() && left.routes.is_empty() && left.wg_peers.is_empty(),
        "{left:?}"
    );
}

#[test]
#[ignore = "needs the kernel's WireGuard module: `cargo xtask e2e --vm --netns-tests` runs it"]
fn kernel_wireguard_preshared_key_ports_and_keepalive_are_on_every_peer() {
    let psk = [7u8; 32];
    let options = support::WgOptions {
        keepalive: 5,
        listen_ports: (51000, 51001),
        psk: Some(psk),
        ..kernel_devices()
    };
    let cluster = Cluster::with_wireguard(Stack::V4, &[0, 0, 0], options);
    ping_all(&cluster);
    let psk = weft_fabric::WgPublicKey(psk).to_string();
    for n in 1..=3 {
        assert_eq!(
            wg_show(&cluster, n, "flannel-wg", "listen-port").trim(),
            "51000"
        );
        let keys = wg_show(&cluster, n, "flannel-wg", "preshared-keys");
        assert_eq!(keys.lines().count(), 2, "{keys}");
        assert!(keys.lines().all(|l| l.ends_with(&psk)), "{keys}");
        let keepalive = wg_show(&cluster, n, "flannel-wg", "persistent-keepalive");
        assert!(keepalive.lines().all(|l| l.ends_with("\t5")), "{keepalive}");
        let again = cluster.converge(n - 1);
        assert!(again.plan.is_empty(), "{}", again.plan);
    }
}

/// The kernel sends no WireGuard notifications, so a mirror reads its kernel devices' peers
/// every [`weft_kernel::WIREGUARD_POLL`]. An agent drops its wait for a notification whenever
/// a lease event comes first; here every wait is polled once and dropped unless it is done,
/// as constant churn would, and a peer removed by hand must still come back within a few
/// polls.
#[test]
#[ignore = "needs the kernel's WireGuard module: `cargo xtask e2e --vm --netns-tests` runs it"]
fn kernel_wireguard_peer_removed_by_hand_comes_back_while_every_wait_is_cut_short() {
    let cluster = Cluster::with_wireguard(Stack::V4, &[0, 0], kernel_devices());
    let (desired, scope) = cluster.desired(0);
    let peer = cluster.nodes[1].wg_key.public_key();
    let node = &cluster.nodes[0];
    let wg = node.wg.clone();
    let ns = &node.ns;
    // The mirror runs in the node's namespace; this thread removes the peer once it holds all.
    let (converged, ready) = std::sync::mpsc::channel::<()>();
    let (removed, done) = std::sync::mpsc::channel::<()>();
    let took = std::thread::scope(|s| {
        s.spawn(move || {
            if ready.recv().is_ok() {
                let key = peer.to_string();
                ns.exec(&["wg", "set", "flannel-wg", "peer", &key, "remove"])
                    .unwrap();
                removed.send(()).unwrap();
            }
        });
        node.ns
            .run(move |kernel| async move {
                let mut mirror = Mirror::new(kernel.with_wireguard(wg), scope).unwrap();
                let first = mirror
                    .converge(&desired, &Notice::Resync(Resync::Requested))
                    .await
                    .unwrap();
                assert!(first.plan.is_empty(), "{}", first.plan);
                converged.send(()).unwrap();
                done.recv().unwrap();
                let started = Instant::now();
                let mut cut_short = 0u32;
                while started.elapsed() < 5 * weft_kernel::WIREGUARD_POLL {
                    // One poll of the wait, dropped when it has nothing yet; the runtime then
                    // runs its drivers and the blocking pool before the next one.
                    let Some(notice) = mirror.changed().now_or_never() else {
                        cut_short += 1;
                        tokio::task::yield_now().await;
                        continue;
                    };
                    let notice = notice.unwrap();
                    let done = mirror.converge(&desired, &notice).await.unwrap();
                    if done.plan.ops.iter().any(|op| {
                        matches!(op, Op::ReplaceWgPeer { public_key, .. } if *public_key == peer)
                    }) {
                        return Some((started.elapsed(), cut_short));
                    }
                }
                None
            })
            .unwrap()
    });
    let (took, cut_short) = took.expect("the peer removed by hand never came back");
    // Each cut dropped a `changed()` in the middle of its wait, the poll's read included.
    assert!(
        cut_short > 0,
        "no wait was cut short: the test proves nothing"
    );
    assert!(
        took < 3 * weft_kernel::WIREGUARD_POLL,
        "the peer came back only after {took:?}"
    );
    assert!(
        wg_show(&cluster, 1, "flannel-wg", "peers").contains(&peer.to_string()),
        "the mirror planned the peer back, but it is not in the device ({took:?})"
    );
}
