//! The agent's path at scale (feature `test-util`, root): N vxlan peers held the way the agent
//! holds them (weft-fabric's [`DesiredPeers`] and a [`Mirror`] of the kernel), then single lease
//! changes from lease event to kernel, the memory that takes, and a steady stream of changes.
//! Each figure is printed beside its baseline from the same run: the full path the agent took
//! before (observe the kernel, build the whole desired state, plan, apply).
//!
//! A lease event is what the agent does with one: [`DesiredPeers::put`] of the changed lease,
//! then [`Mirror::converge`] of the objects it touched (plan and apply); the kernel's
//! notifications that follow are read and handled as the agent's loop does, between events.
//! Each change gives one peer a new VTEP MAC (three kernel operations).
//!
//! `cargo xtask bench fabric` calls [`run`] through the `agent_bench` example.

use std::fmt;
use std::time::{Duration, Instant};

use weft_fabric::{BackendData, DesiredPeers, KernelState, Lease, MacAddr, desired_state, plan};

use super::{backend, config, lease, local, scope, topology};
use crate::{Kernel, KernelError, Mirror, Notice, Resync};

/// The figures of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentReport {
    /// Peers held.
    pub peers: usize,
    /// Single changes timed.
    pub changes: usize,
    /// Median time from a lease event to the kernel, incremental.
    pub event_to_kernel: Duration,
    /// Median time of the full observe-plan-apply for the same kind of change.
    pub full_path: Duration,
    /// Resident set with every peer held (`VmRSS`), in bytes.
    pub resident: u64,
    /// Resident set before the agent's state was built, in bytes.
    pub resident_before: u64,
    /// The peak resident set of the run (`VmHWM`), which the full path's observations set.
    pub resident_peak: u64,
    /// Changes a second in the steady stream.
    pub rate: u32,
    /// How long the stream was meant to run.
    pub seconds: u64,
    /// How long the stream ran.
    pub stream: Duration,
    /// CPU time of the stream over its wall time (1.0 is one core).
    pub stream_cpu: f64,
    /// 99th percentile of event to kernel in the stream.
    pub stream_p99: Duration,
    /// The slowest change of the stream.
    pub stream_max: Duration,
    /// Changes of the stream that took over 10 ms.
    pub stream_late: usize,
    /// Whole observations of the kernel during the stream (lost notifications, a weft link
    /// changed); none is the point.
    pub stream_observations: u64,
    /// CPU time one full observe-plan-apply takes.
    pub full_path_cpu: Duration,
}

/// Runs the benchmark: `peers` peers, `changes` single changes timed, then `rate` changes a
/// second for `seconds`.
pub fn run(
    peers: usize,
    changes: usize,
    rate: u32,
    seconds: u64,
) -> Result<AgentReport, KernelError> {
    let (node, _peer) = topology()?;
    node.run(
        move |kernel: Kernel| async move { measure(kernel, peers, changes, rate, seconds).await },
    )?
}

async fn measure(
    kernel: Kernel,
    peers: usize,
    changes: usize,
    rate: u32,
    seconds: u64,
) -> Result<AgentReport, KernelError> {
    let (backend, config, local) = (backend(), config(), local());
    let mut leases: Vec<Lease> = (0..peers).map(lease).collect();
    let resident_before = status_bytes("VmRSS:")?;

    let mut desired = DesiredPeers::new(&backend, &local, leases.iter().cloned(), &config)
        .map_err(|e| bench_error(&e.to_string()))?;
    let mut mirror = Mirror::new(kernel.clone(), scope())?;
    let first = Notice::Resync(Resync::Requested);
    mirror.converge(&in_scope(desired.state()), &first).await?;
    settle(&mut mirror, &desired).await?;
    let resident = status_bytes("VmRSS:")?;

    // Single changes, each after the notifications of the one before were handled.
    let mut round = 0u8;
    let mut times = Vec::with_capacity(changes);
    for i in 0..changes {
        round = round.wrapping_add(1);
        let changed = new_mac(&mut leases, i * 97 % peers, round);
        let t = Instant::now();
        let keys = desired
            .put(&backend, &config, changed)
            .map_err(|e| bench_error(&e.to_string()))?;
        let done = mirror
            .converge(desired.state(), &Notice::Objects(keys))
            .await?;
        times.push(t.elapsed());
        if done.plan.len() != 3 || done.observed {
            return Err(bench_error(&format!(
                "one changed peer took {} operations (observed: {}), not 3",
                done.plan.len(),
                done.observed
            )));
        }
        settle(&mut mirror, &desired).await?;
    }
    if kernel.observe(&scope()).await? != in_scope(desired.state()) {
        return Err(bench_error("the kernel differs from the desired state"));
    }

    // The full path for the same kind of change.
    let mut full_times = Vec::new();
    let mut full_cpu = Duration::ZERO;
    let mut changed = Vec::new();
    for i in 0..changes.clamp(1, 20) {
        round = round.wrapping_add(1);
        changed.push(new_mac(&mut leases, i * 89 % peers, round));
        let (t, cpu) = (Instant::now(), cpu_time()?);
        let observed = kernel.observe(&scope()).await?;
        let wanted = desired_state(&backend, &local, &leases, &config)
            .map_err(|e| bench_error(&e.to_string()))?;
        kernel
            .apply(&plan(&observed, &in_scope(&wanted.state)))
            .await?;
        full_times.push(t.elapsed());
        full_cpu += cpu_time()?.saturating_sub(cpu);
    }
    let full_path_cpu = full_cpu / u32::try_from(full_times.len()).unwrap_or(1);
    // The agent learns of the same changes (the kernel has them already).
    settle(&mut mirror, &desired).await?;
    for lease in changed {
        let keys = desired
            .put(&backend, &config, lease)
            .map_err(|e| bench_error(&e.to_string()))?;
        mirror
            .converge(desired.state(), &Notice::Objects(keys))
            .await?;
    }
    settle(&mut mirror, &desired).await?;

    // The stream: one change every 1/rate s, notifications handled between them, as the
    // agent's loop does.
    let period = Duration::from_secs(1) / rate.max(1);
    let total = u64::from(rate) * seconds;
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut latencies = Vec::new();
    let (start, cpu_start) = (Instant::now(), cpu_time()?);
    let observations = mirror.observations();
    let mut sent = 0u64;
    while sent < total {
        tokio::select! {
            tick = ticker.tick() => {
                round = round.wrapping_add(1);
                let i = usize::try_from(sent).unwrap_or(0) * 31 % peers;
                let changed = new_mac(&mut leases, i, round);
                let keys = desired
                    .put(&backend, &config, changed)
                    .map_err(|e| bench_error(&e.to_string()))?;
                mirror
                    .converge(desired.state(), &Notice::Objects(keys))
                    .await?;
                latencies.push(tick.into_std().elapsed());
                sent += 1;
            }
            notice = mirror.changed() => handle(&mut mirror, &desired, notice?).await?,
        }
    }
    let stream = start.elapsed();
    let stream_observations = mirror.observations() - observations;
    let stream_cpu = cpu_time()?.saturating_sub(cpu_start).as_secs_f64() / stream.as_secs_f64();
    latencies.sort();

    Ok(AgentReport {
        peers,
        changes: times.len(),
        event_to_kernel: median(&mut times),
        full_path: median(&mut full_times),
        resident,
        resident_before,
        resident_peak: status_bytes("VmHWM:")?,
        rate,
        seconds,
        stream,
        stream_cpu,
        stream_p99: percentile(&latencies, 0.99),
        stream_max: latencies.last().copied().unwrap_or_default(),
        stream_late: latencies
            .iter()
            .filter(|t| **t > Duration::from_millis(10))
            .count(),
        stream_observations,
        full_path_cpu,
    })
}

/// Gives peer `i` a new VTEP MAC (unique to `round`) and returns its lease.
fn new_mac(leases: &mut [Lease], i: usize, round: u8) -> Lease {
    let [_, _, hh, ll] = u32::try_from(i).unwrap_or(0).to_be_bytes();
    let lease = &mut leases[i];
    lease.backend = BackendData::Vxlan {
        vtep_mac_ipv4: Some(MacAddr([0x06, round, 0, 0, hh, ll])),
        vtep_mac_ipv6: None,
    };
    lease.clone()
}

/// Handles the notifications already queued (the echoes of the last apply), as the agent's
/// loop would before the next event.
async fn settle(mirror: &mut Mirror, desired: &DesiredPeers) -> Result<(), KernelError> {
    while let Ok(notice) = tokio::time::timeout(Duration::from_millis(5), mirror.changed()).await {
        handle(mirror, desired, notice?).await?;
    }
    Ok(())
}

/// What the agent does with a notification: repair the objects it names, or observe and
/// reconcile the whole scope.
async fn handle(
    mirror: &mut Mirror,
    desired: &DesiredPeers,
    notice: Notice,
) -> Result<(), KernelError> {
    match notice {
        Notice::Objects(_) => mirror.converge(desired.state(), &notice).await?,
        Notice::Resync(_) => mirror.converge(&in_scope(desired.state()), &notice).await?,
    };
    Ok(())
}

/// The desired state without the firewall and sysctls (the bench's scope is `flannel.1`).
fn in_scope(state: &KernelState) -> KernelState {
    let mut state = state.clone();
    state.firewall.clear();
    state.sysctls.clear();
    state
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let at = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[at]
}

/// A `kB` line of `/proc/self/status`, in bytes.
fn status_bytes(key: &str) -> Result<u64, KernelError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| bench_error(&format!("/proc/self/status: {e}")))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| bench_error(&format!("/proc/self/status has no {key} line")))
}

/// CPU time of this process, user and system (`/proc/self/stat`, in clock ticks of 10 ms).
fn cpu_time() -> Result<Duration, KernelError> {
    let stat = std::fs::read_to_string("/proc/self/stat")
        .map_err(|e| bench_error(&format!("/proc/self/stat: {e}")))?;
    // The fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |at: usize| fields.get(at).and_then(|v| v.parse::<u64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => Ok(Duration::from_millis((user + system) * 10)),
        _ => Err(bench_error("/proc/self/stat has no utime and stime")),
    }
}

fn bench_error(what: &str) -> KernelError {
    KernelError::NotFound {
        object: format!("agent bench: {what}"),
    }
}

// === impl AgentReport ===

impl fmt::Display for AgentReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        let n = self.peers;
        writeln!(
            f,
            "agent: one peer changed among {n}, lease event to kernel: {:.2} ms (target <= 2 ms; median of {}; full observe-plan-apply: {:.1} ms)",
            ms(self.event_to_kernel),
            self.changes,
            ms(self.full_path)
        )?;
        writeln!(
            f,
            "agent: {n} peers, resident set: {:.1} MiB (target <= 25 MiB; before the peers were held: {:.1} MiB; peak of the run, full observe-plan-apply included: {:.1} MiB)",
            mib(self.resident),
            mib(self.resident_before),
            mib(self.resident_peak)
        )?;
        write!(
            f,
            "agent: {} lease changes a second for {} s among {n} peers: {:.1}% of one core (full observe-plan-apply: {:.0}% at that rate, {:.1} ms of CPU per change); event to kernel p99 {:.2} ms, max {:.2} ms, {} of {} over 10 ms (target: none), {} whole observations",
            self.rate,
            self.seconds,
            self.stream_cpu * 100.0,
            ms(self.full_path_cpu) * f64::from(self.rate) / 10.0,
            ms(self.full_path_cpu),
            ms(self.stream_p99),
            ms(self.stream_max),
            self.stream_late,
            u64::from(self.rate) * self.seconds,
            self.stream_observations
        )
    }
}
