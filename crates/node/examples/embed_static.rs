//! Embedding weft's pod network in a distribution that already allocates node pod CIDRs:
//! program this node from a static JSON file of leases, with no weft server.
//!
//! ```text
//! cargo run -p weft-node --example embed_static -- LEASES.json NODE-NAME DATA-DIR [--once]
//! ```
//!
//! The file holds the cluster network (the keys `weft-server validate` prints for it) and every
//! node's lease (`crates/node/examples/static-leases.json` is one). The node's backend data
//! published in the file must match what this host's agent identity uses, so in a real
//! embedding the distribution publishes [`weft_node::agent::Fabric::register_request`]'s
//! backend data (the VTEP MACs from the data dir) through its own API and writes the file (or
//! implements [`weft_node::LeaseSource`] over its API directly). Needs root; `--once` applies
//! once and prints the plan instead of running until Ctrl-C.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use weft_fabric::MasqMode;
use weft_kernel::Kernel;
use weft_node::agent::{self, AgentSettings};
use weft_node::{LeaseSource, StaticSource, daemon};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [file, node, dir, rest @ ..] = args.as_slice() else {
        return Err("usage: embed_static LEASES.json NODE-NAME DATA-DIR [--once]".into());
    };
    let once = rest.iter().any(|a| a == "--once");
    let dir = PathBuf::from(dir);
    let mut source = StaticSource::read(file.as_ref())?;
    // The node's own public addresses pick the interface fabric traffic leaves by.
    let node_ips = source
        .leases()
        .iter()
        .filter(|l| l.node_name == *node)
        .flat_map(|l| [l.public_ip(false), l.public_ip(true)])
        .flatten()
        .collect();
    let settings = AgentSettings {
        dir: dir.join("agent"),
        node_name: node.clone(),
        node_ips,
        external_ips: vec![],
        flannel_iface: None,
        subnet_file: dir.join("subnet.env"),
        cni_conf_dir: dir.join("net.d"),
        flannel_cni_conf: None,
        masq_mode: MasqMode::Nftables,
        reconcile_interval: Duration::from_secs(10),
        wireguard_implementation: None,
    };
    daemon::runtime()?.block_on(async {
        let kernel = Kernel::connect()?;
        let (mut fabric, _) = agent::join(&mut source, settings, kernel).await?;
        if once {
            let snapshot = source.next().await?;
            fabric.update(snapshot);
            let done = fabric.reconcile().await?;
            std::io::stdout().write_all(done.plan.to_string().as_bytes())?;
            for problem in done.problems {
                writeln!(std::io::stderr(), "warning: {problem}")?;
            }
            return Ok(());
        }
        agent::run(&mut source, fabric, daemon::shutdown_signal()).await?;
        Ok(())
    })
}
