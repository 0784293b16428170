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
    check("demo", Err("unknown task `demo`"));
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
