//! The planning workload: a vxlan node with 5,000 peers (15,000 kernel objects), planned from
//! an empty kernel and after one peer changed, in full and incrementally (as the agent plans a
//! lease change: that peer's objects against the state kept in memory).

use weft_fabric::{
    BackendData, DesiredPeers, DesiredState, ExternalInterface, FabricConfig, KernelState, Lease,
    MacAddr, MasqMode, Plan, Vxlan, desired_state, plan, plan_objects,
};
use weft_ipam::CidrList;

/// A node and its peers, as the agent holds them.
pub struct FabricWorkload {
    backend: Vxlan,
    local: Lease,
    peers: Vec<Lease>,
    config: FabricConfig,
}

/// Peer `i`'s lease: pod CIDR `10.a.b.0/24` (`a = 1 + i / 256`, `b = i % 256`), VTEP MAC
/// `02:00:00:00:hh:ll`, underlay address in 100.64.0.0/10.
fn peer(i: usize) -> Lease {
    let (a, b) = (1 + i / 256, i % 256);
    let mac = MacAddr([2, 0, 0, 0, (i >> 8) as u8, i as u8]);
    Lease {
        node_name: format!("node-{i}"),
        ipv4_cidr: format!("10.{a}.{b}.0/24").parse().ok(),
        ipv6_cidr: None,
        public_ipv4: Some(std::net::Ipv4Addr::from(0x6440_0000u32 + i as u32)),
        public_ipv6: None,
        backend: BackendData::Vxlan {
            vtep_mac_ipv4: Some(mac),
            vtep_mac_ipv6: None,
        },
        created_revision: 0,
    }
}

// === impl FabricWorkload ===

impl FabricWorkload {
    /// This node plus `peers` peers in `10.0.0.0/8`.
    pub fn new(peers: usize) -> FabricWorkload {
        let local = Lease {
            node_name: "local".into(),
            ipv4_cidr: "10.0.0.0/24".parse().ok(),
            ipv6_cidr: None,
            public_ipv4: Some([192, 0, 2, 1].into()),
            public_ipv6: None,
            backend: BackendData::None,
            created_revision: 0,
        };
        FabricWorkload {
            backend: Vxlan {
                mac_v4: MacAddr([2, 0, 0, 0xff, 0, 1]),
                mac_v6: MacAddr([2, 0, 0, 0xff, 0, 2]),
                settings: weft_fabric::VxlanSettings::default(),
            },
            local,
            peers: (0..peers).map(peer).collect(),
            config: FabricConfig {
                cluster: CidrList::parse("cluster-cidr", &["10.0.0.0/8"])
                    .expect("the workload's cluster CIDR parses"),
                ipv6_masq: false,
                masq_mode: MasqMode::Nftables,
                fully_random: true,
                external: ExternalInterface {
                    name: "eth0".into(),
                    mtu: 1500,
                    onlink: vec![],
                    addresses: vec![],
                },
            },
        }
    }

    /// The desired state for every peer.
    pub fn desired(&self) -> DesiredState {
        desired_state(&self.backend, &self.local, &self.peers, &self.config)
            .expect("the workload's leases are valid")
            .state
    }

    /// Plans every peer from an empty kernel: desired state, then the diff.
    pub fn plan_from_scratch(&self) -> Plan {
        plan(&KernelState::default(), &self.desired())
    }

    /// Changes peer `i`'s VTEP MAC (as after a peer's data dir was lost) and plans from the
    /// state that holds every peer as before: desired state again, then the diff.
    pub fn plan_one_changed(&mut self, before: &KernelState, i: usize) -> Plan {
        let peer = &mut self.peers[i];
        peer.backend = BackendData::Vxlan {
            vtep_mac_ipv4: Some(MacAddr([2, 0, 0, 0xee, (i >> 8) as u8, i as u8])),
            vtep_mac_ipv6: None,
        };
        plan(before, &self.desired())
    }

    /// The desired state kept per peer, as the agent holds it.
    pub fn desired_peers(&self) -> DesiredPeers {
        DesiredPeers::new(
            &self.backend,
            &self.local,
            self.peers.iter().cloned(),
            &self.config,
        )
        .expect("the workload's leases are valid")
    }

    /// Changes peer `i`'s VTEP MAC as [`FabricWorkload::plan_one_changed`] does, but plans it
    /// the agent's way: that peer's objects in `desired`, then the plan of the keys they
    /// touched against `observed` (the kernel as last seen).
    pub fn plan_one_changed_incremental(
        &mut self,
        desired: &mut DesiredPeers,
        observed: &KernelState,
        i: usize,
    ) -> Plan {
        let peer = &mut self.peers[i];
        peer.backend = BackendData::Vxlan {
            vtep_mac_ipv4: Some(MacAddr([2, 0, 0, 0xee, (i >> 8) as u8, i as u8])),
            vtep_mac_ipv6: None,
        };
        let keys = desired
            .put(&self.backend, &self.config, peer.clone())
            .expect("the workload's leases are valid");
        plan_objects(observed, desired.state(), &keys)
    }
}
