//! Distributed load: `run --shard i/N` sends every N-th arrival of one seeded schedule
//! (from the i-th), so that N generators together send the schedule one would; `merge`
//! adds their reports' samples (counts and histograms, exactly) into the report of the
//! whole run.

use std::fmt;
use std::str::FromStr;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::report::{Params, Raw, Report};

/// One share of a schedule: the arrivals numbered `index` modulo `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Whether arrival `number` (from 0) is this shard's.
    pub fn owns(&self, number: u64) -> bool {
        number % u64::from(self.count) == u64::from(self.index)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    /// `i/N` with `0 <= i < N`.
    fn from_str(text: &str) -> Result<Self, String> {
        let (index, count) = text.split_once('/').ok_or_else(|| format!("a shard is i/N, not {text:?}"))?;
        let parse = |s: &str| s.trim().parse::<u32>().map_err(|_| format!("a shard is i/N, not {text:?}"));
        let (index, count) = (parse(index)?, parse(count)?);
        if count == 0 || index >= count {
            return Err(format!("shard {text}: i is from 0 to N-1"));
        }
        Ok(Shard { index, count })
    }
}

impl Serialize for Shard {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Shard {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

/// What `merge` reads of a report.
#[derive(Deserialize)]
struct ShardReport {
    params: Params,
    raw: Option<Raw>,
}

/// The report of the whole run from its shards' reports (JSON, as `run --json` writes
/// them): the same settings but the shard, each shard once, every one present.
pub fn merge(reports: &[(String, String)]) -> anyhow::Result<Report> {
    anyhow::ensure!(!reports.is_empty(), "nothing to merge");
    let mut shards = Vec::new();
    for (name, text) in reports {
        let report: ShardReport =
            serde_json::from_str(text).with_context(|| format!("{name} is not a run report"))?;
        let raw = report
            .raw
            .with_context(|| format!("{name} has no samples (written by an older infergate-load?)"))?;
        shards.push((name, report.params, raw));
    }
    let count = shards[0].1.shard.map_or(1, |s| s.count);
    let mut seen = vec![None::<&str>; count as usize];
    let same = |p: &Params| Params { shard: None, ..p.clone() };
    anyhow::ensure!(shards[0].1.merged_shards.is_none(), "{} is a merged report already", shards[0].0);
    for (name, params, _) in &shards {
        let shard = params.shard.with_context(|| format!("{name} is not a shard's report (no --shard)"))?;
        anyhow::ensure!(shard.count == count, "{name} is shard {shard}, the others are of {count}");
        anyhow::ensure!(
            same(params) == same(&shards[0].1),
            "{name} ran with other settings than {} (all shards run one command but --shard)",
            shards[0].0
        );
        if let Some(other) = seen[shard.index as usize].replace(name) {
            anyhow::bail!("{name} and {other} are both shard {shard}");
        }
    }
    let missing: Vec<String> =
        (0..count).filter(|i| seen[*i as usize].is_none()).map(|i| format!("{i}/{count}")).collect();
    anyhow::ensure!(missing.is_empty(), "shards missing: {}", missing.join(", "));

    let mut shards = shards.into_iter();
    let (_, params, mut raw) = shards.next().context("nothing to merge")?;
    for (_, _, other) in shards {
        raw.tally.merge(other.tally);
        raw.elapsed_s = raw.elapsed_s.max(other.elapsed_s);
        match (&mut raw.schedule, &other.schedule) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (None, None) => {}
            _ => anyhow::bail!("the shards mix open- and closed-loop runs"),
        }
    }
    let params = Params { shard: None, merged_shards: Some(count), ..params };
    Ok(Report { params, summary: raw.summarize(), raw: Some(raw) })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::histogram::Histogram;
    use crate::report::{KeptSchedule, Tally};
    use crate::request::{ErrorKind, Outcome, Sent, Streamed};

    fn params(shard: Option<Shard>) -> Params {
        Params {
            mode: "open-loop".into(),
            method: "POST".into(),
            url: "http://127.0.0.1:8080/v1/chat/completions".into(),
            protocol: "HTTP/1.1".into(),
            scenario: vec!["chat".into(), "embed".into()],
            concurrency: 64,
            arrivals: Some(crate::arrivals::Arrivals::Poisson { rate: 100.0, seed: 1 }),
            shape: None,
            replay_arrivals: None,
            duration_s: Some(10.0),
            requests: None,
            warmup_s: 0.0,
            timeout_s: 30.0,
            shard,
            merged_shards: None,
        }
    }

    /// The `n`-th request's result: successes, streams, errors and refusals, by entry.
    fn sample(n: u64) -> (Sent, Duration, u64) {
        let ms = |v: u64| Duration::from_micros(v * 137 + 50);
        let outcome = match n % 7 {
            0 => Outcome::Error { kind: ErrorKind::Timeout, detail: "no complete response".into() },
            1 => Outcome::Response { status: 503, queue_ms: None, stream: None },
            2 | 3 => Outcome::Response {
                status: 200,
                queue_ms: Some((n % 13) as f64),
                stream: Some(Streamed {
                    first_token: Some(ms(n % 97)),
                    gaps: vec![ms(n % 5), ms(n % 11)],
                    tokens: 3,
                    end: ms(n % 97 + 40),
                }),
            },
            _ => Outcome::Response { status: 200, queue_ms: Some(0.5), stream: None },
        };
        let scenario = Some(if n.is_multiple_of(3) { "embed" } else { "chat" }.into());
        (Sent { outcome, latency: ms(n * 7 % 1000), scenario }, Duration::from_millis(n * 10), n)
    }

    fn kept(lags: impl Iterator<Item = u64>, scheduled: u64) -> KeptSchedule {
        let mut lag_us = Histogram::default();
        lags.for_each(|l| lag_us.record(l));
        KeptSchedule { lag_us, scheduled, window_s: 10.0, skipped: 0, max_lag_ms: 1.0, max_in_flight: 10_000 }
    }

    #[test]
    fn four_shards_merge_into_the_report_of_all_their_samples() {
        let count = 4;
        let mut whole = Tally::default();
        (0..1000).map(sample).for_each(|(sent, at, _)| whole.record_sent(sent, at));
        // The whole run ends with its last response: the latest shard's.
        let whole =
            Raw { tally: whole, elapsed_s: 10.15, schedule: Some(kept((0..1000).map(|n| n % 300), 1000)) };

        let reports: Vec<(String, String)> = (0..count)
            .map(|index| {
                let mut tally = Tally::default();
                let mine = (0..1000).filter(|n| n % u64::from(count) == u64::from(index));
                mine.clone().map(sample).for_each(|(sent, at, _)| tally.record_sent(sent, at));
                let schedule = kept(mine.clone().map(|n| n % 300), mine.count() as u64);
                let elapsed_s = 10.0 + f64::from(index) * 0.05;
                let raw = Raw { tally, elapsed_s, schedule: Some(schedule) };
                let report = Report {
                    params: params(Some(Shard { index, count })),
                    summary: raw.summarize(),
                    raw: Some(raw),
                };
                (format!("shard-{index}.json"), serde_json::to_string(&report).unwrap())
            })
            .rev()
            .collect();
        let merged = merge(&reports).unwrap();
        let raw = merged.raw.as_ref().unwrap();
        assert_eq!(raw.tally, whole.tally, "counts and histograms add up exactly");
        assert_eq!(raw.schedule, whole.schedule);
        assert_eq!(merged.summary, whole.summarize(), "the same summary as one generator's");
        assert_eq!(merged.params, Params { merged_shards: Some(4), ..params(None) });
        assert!(merged.render().contains("4 shards merged"));

        // Each shard once, every shard, one run's settings.
        assert!(merge(&reports[..3]).unwrap_err().to_string().contains("shards missing: 0/4"));
        let twice = [reports.clone(), vec![reports[0].clone()]].concat();
        assert!(merge(&twice).unwrap_err().to_string().contains("both shard"));
        let other = reports[1].1.replace("\"seed\":1", "\"seed\":2");
        let changed =
            [vec![reports[0].clone(), ("other.json".into(), other)], reports[2..].to_vec()].concat();
        assert!(merge(&changed).unwrap_err().to_string().contains("other settings"));
        let unsharded = serde_json::to_string(&Report {
            params: params(None),
            summary: whole.summarize(),
            raw: Some(whole),
        });
        assert!(merge(&[("run.json".into(), unsharded.unwrap())]).is_err());
    }

    #[test]
    fn shards_read_and_write_as_i_of_n() {
        assert_eq!("2/4".parse::<Shard>(), Ok(Shard { index: 2, count: 4 }));
        assert_eq!(Shard { index: 0, count: 3 }.to_string(), "0/3");
        for bad in ["4/4", "1/0", "1", "a/2", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        let shards: Vec<Shard> = (0..4).map(|index| Shard { index, count: 4 }).collect();
        for number in 0..100 {
            assert_eq!(shards.iter().filter(|s| s.owns(number)).count(), 1, "arrival {number}");
        }
    }
}
