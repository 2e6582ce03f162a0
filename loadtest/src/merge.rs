//! `infergate-load merge`: the shards' reports of one distributed run (`run --shard i/N`)
//! added up into the report of the whole run; their samples (counts and histograms) add
//! exactly.

use anyhow::Context as _;
use serde::Deserialize;

use crate::report::{Params, Raw, Report};

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
    use crate::shard::Shard;

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
}
