//! What a daemon reports about itself, read from its metrics listener (`127.0.0.1:9346` in the
//! node's namespace, the default `metrics-address`): `/readyz` and the `/metrics` counters.
//! Scenarios check these rather than log text, so renaming a log message can't make a check
//! pass without checking anything.

use std::collections::BTreeMap;

use anyhow::Context;

use super::lab::Ns;

/// The metrics listener inside a node's namespace.
const METRICS: &str = "http://127.0.0.1:9346";

/// Whether the daemon in `ns` says it is ready (`GET /readyz` answers 200); `false` while it
/// answers 503 or does not answer yet.
pub(crate) fn ready(ns: &Ns) -> bool {
    ns.run(
        "curl",
        &["-fsS", "--max-time", "2", &format!("{METRICS}/readyz")],
    )
    .is_ok()
}

/// One scrape of `/metrics`: every sample by name, with its labels.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Scrape {
    samples: Vec<Sample>,
}

/// One line of the OpenMetrics text: `name{label="value",...} number`.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Scrapes the daemon in `ns`.
pub(crate) fn scrape(ns: &Ns) -> anyhow::Result<Scrape> {
    let text = ns
        .run(
            "curl",
            &["-fsS", "--max-time", "2", &format!("{METRICS}/metrics")],
        )
        .context("scraping /metrics")?;
    Ok(Scrape::parse(&text))
}

// === impl Scrape ===

impl Scrape {
    /// Reads the OpenMetrics text; comments and lines it can't read are skipped.
    pub(crate) fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(sample)
            .collect();
        Scrape { samples }
    }

    /// The sum of every sample called `name` whose labels include `labels`; 0 when none.
    pub(crate) fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }
}

/// One sample line.
fn sample(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, labels(rest.strip_suffix('}')?)?),
        None => (series, BTreeMap::new()),
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `a="x",b="y"` (weft's label values hold no commas or quotes).
fn labels(text: &str) -> Option<BTreeMap<String, String>> {
    text.split(',')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=')?;
            Some((key.to_owned(), value.trim_matches('"').to_owned()))
        })
        .collect()
}
