//! Tests for the hand-rolled argument parser.

use super::*;

fn check(args: &str, expect: Result<Task, &str>) {
    let args: Vec<String> = args.split_whitespace().map(str::to_owned).collect();
    let got = parse(&args).map_err(|err| err.to_string());
    assert_eq!(got, expect.map_err(str::to_owned), "args: {args:?}");
}

fn run(target: &str, seconds: u64) -> Task {
    Task::Fuzz(Fuzz::Run {
        target: target.to_owned(),
        seconds,
    })
}

#[test]
fn tasks() {
    check("ci", Ok(Task::Ci));
    check("tidy", Ok(Task::Tidy));
    check("help", Ok(Task::Help));
    check("--help", Ok(Task::Help));
    check("", Err("no task given"));
    check("deploy", Err("unknown task `deploy`"));
    check("ci --fast", Err("unexpected argument `--fast`"));
}

#[test]
fn fuzz() {
    check("fuzz cidr_list --seconds 20", Ok(run("cidr_list", 20)));
    check("fuzz --seconds=5 cidr_list", Ok(run("cidr_list", 5)));
    check("fuzz cidr_list", Ok(run("cidr_list", DEFAULT_FUZZ_SECONDS)));
    check("fuzz --list", Ok(Task::Fuzz(Fuzz::List)));
    check("fuzz", Err("fuzz needs a target name or `--list`"));
    check(
        "fuzz --list cidr_list",
        Err("`--list` takes no target and no `--seconds`"),
    );
    check("fuzz cidr_list --seconds", Err("`--seconds` needs a value"));
    check(
        "fuzz cidr_list --seconds 0",
        Err("`--seconds` needs a whole number above 0, not `0`"),
    );
    check(
        "fuzz cidr_list --seconds ten",
        Err("`--seconds` needs a whole number above 0, not `ten`"),
    );
    check("fuzz cidr_list --jobs 2", Err("unknown fuzz flag `--jobs`"));
    check(
        "fuzz a b",
        Err("unexpected argument `b`: fuzz runs one target at a time"),
    );
}

#[test]
fn bench() {
    check("bench", Ok(Task::Bench(Bench { name: None })));
    check(
        "bench ipam",
        Ok(Task::Bench(Bench {
            name: Some("ipam".to_owned()),
        })),
    );
    check("bench --quick", Err("unknown bench flag `--quick`"));
    check(
        "bench ipam fabric",
        Err("unexpected argument `fabric`: bench takes at most one name"),
    );
}

#[test]
fn e2e() {
    let e2e = |f: fn(&mut E2e)| {
        let mut e2e = E2e::default();
        f(&mut e2e);
        Ok(Task::E2e(e2e))
    };
    check("e2e", e2e(|_| {}));
    check("e2e --list", e2e(|e| e.list = true));
    check(
        "e2e --only vxlan-ipv4 --only restart",
        e2e(|e| e.only = vec!["vxlan-ipv4".to_owned(), "restart".to_owned()]),
    );
    check(
        "e2e --bin-dir /opt/weft",
        e2e(|e| e.bin_dir = Some("/opt/weft".into())),
    );
    check("e2e --reap 42", e2e(|e| e.reap = Some(42)));
    check(
        "e2e --serve 0.0.0.0:10250 kubelet-n2",
        e2e(|e| e.serve = Some(("0.0.0.0:10250".to_owned(), "kubelet-n2".to_owned()))),
    );
    check(
        "e2e --serve 0.0.0.0:10250",
        Err("`--serve` needs an address and a name"),
    );
    check("e2e --only", Err("`--only` needs a scenario name"));
    check(
        "e2e --reap me",
        Err("`--reap` needs a process id, not `me`"),
    );
    check(
        "e2e --list --only restart",
        Err("`--list` takes no other flag but `--vm`"),
    );
    check("e2e --vm --list", e2e(|e| (e.vm, e.list) = (true, true)));
    check(
        "e2e --vm --kernel /boot/vmlinuz-6.12 --only vxlan-ipv4",
        e2e(|e| {
            e.vm = true;
            e.kernel = Some("/boot/vmlinuz-6.12".into());
            e.only = vec!["vxlan-ipv4".to_owned()];
        }),
    );
    check(
        "e2e --kernel /boot/vmlinuz",
        Err("`--kernel` needs `--vm`: it names the kernel the VM boots"),
    );
    check(
        "e2e --in-vm --patience 6 --wireguard-implementation userspace",
        e2e(|e| {
            e.in_vm = true;
            e.patience = Some(6);
            e.wireguard = Some(WireguardImplementation::Userspace);
        }),
    );
    check(
        "e2e --wireguard-implementation fast",
        Err("`--wireguard-implementation` takes kernel or userspace, not Some(\"fast\")"),
    );
    check(
        "e2e --patience slow",
        Err("`--patience` needs a whole number, not `slow`"),
    );
    check("e2e --fast", Err("unknown e2e flag `--fast`"));
    check(
        "e2e restart",
        Err("unexpected argument `restart`: name a scenario with `--only restart`"),
    );
}

#[test]
fn demo() {
    check("demo", Ok(Task::Demo(Demo::default())));
    check(
        "demo --once",
        Ok(Task::Demo(Demo {
            once: true,
            bin_dir: None,
        })),
    );
    check("demo --nodes 5", Err("unknown demo flag `--nodes`"));
}
