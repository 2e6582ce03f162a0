//! The target's own metrics during a run: its Prometheus endpoint scraped every interval,
//! each scrape stamped on the generator's clock (seconds into the measured window), so the
//! gateway's queue depth and in-flight count line up with the client-side timeline.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;

use crate::report::Scrape;
use crate::request::Client;

/// Metrics scraped when none are named: infergate's queue depth and requests in flight.
pub const DEFAULT_METRICS: [&str; 2] = ["infergate_queue_depth", "infergate_requests_in_flight"];

/// A running scraper; [`Scraper::stop`] ends it and returns what it collected.
pub struct Scraper {
    task: tokio::task::JoinHandle<()>,
    scrapes: Arc<Mutex<Vec<Scrape>>>,
}

impl Scraper {
    /// Scrape `url` now and every `every` after, summing each of `names` over its series;
    /// times are seconds from `origin` (the start of the measured window).
    pub fn start(client: Client, url: Uri, names: Vec<String>, origin: Instant, every: Duration) -> Self {
        let scrapes = Arc::new(Mutex::new(Vec::new()));
        let sink = scrapes.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut warned = false;
            loop {
                tick.tick().await;
                let at = Instant::now();
                let t_s = if at >= origin {
                    at.duration_since(origin).as_secs_f64()
                } else {
                    -origin.duration_since(at).as_secs_f64()
                };
                match fetch(&client, &url).await {
                    Ok(text) => {
                        let values = parse(&text, &names, None);
                        sink.lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(Scrape { t_s, values });
                    }
                    Err(error) if !warned => {
                        warned = true;
                        eprintln!("infergate-load: cannot scrape {url}: {error}");
                    }
                    Err(_) => {}
                }
            }
        });
        Scraper { task, scrapes }
    }

    /// Stop scraping; the scrapes in time order.
    pub fn stop(self) -> Vec<Scrape> {
        self.task.abort();
        std::mem::take(&mut *self.scrapes.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// One scrape of `names` from `url`, only series labelled `model="…"` when `model` is given.
pub async fn once(
    client: &Client,
    url: &Uri,
    names: &[String],
    model: Option<&str>,
) -> anyhow::Result<BTreeMap<String, f64>> {
    Ok(parse(&fetch(client, url).await?, names, model))
}

async fn fetch(client: &Client, url: &Uri) -> anyhow::Result<String> {
    let request = Request::get(url.clone()).body(Full::new(Bytes::new()))?;
    let response = tokio::time::timeout(Duration::from_secs(2), client.request(request)).await??;
    anyhow::ensure!(response.status().is_success(), "status {}", response.status());
    let body = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Each of `names` in Prometheus (or OpenMetrics) text, summed over its series (only those
/// labelled `model="…"` when `model` is given); a name with no sample is left out.
pub fn parse(text: &str, names: &[String], model: Option<&str>) -> BTreeMap<String, f64> {
    let mut values = BTreeMap::new();
    for sample in infergate_otel::exposition::samples(text) {
        if !names.iter().any(|n| n == sample.name) {
            continue;
        }
        if model.is_some_and(|m| sample.label("model").as_deref() != Some(m)) {
            continue;
        }
        *values.entry(sample.name.to_owned()).or_insert(0.0) += sample.value;
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_named_metrics_over_their_series() {
        let text = r#"# HELP infergate_queue_depth Jobs waiting.
# TYPE infergate_queue_depth gauge
infergate_queue_depth{model="chat"} 3
infergate_queue_depth{model="odd } name \" here"} 4.5
infergate_queue_depth_total 99
infergate_requests_in_flight 7 1700000000000
other{model="chat"} 1
infergate_requests_in_flight{x="NaN"} NaN
# EOF
"#;
        let names: Vec<String> = DEFAULT_METRICS.iter().map(|s| s.to_string()).collect();
        let values = parse(text, &names, None);
        assert_eq!(values.get("infergate_queue_depth"), Some(&7.5));
        assert_eq!(values.get("infergate_requests_in_flight"), Some(&7.0));
        assert_eq!(values.len(), 2);
        assert!(parse("", &names, None).is_empty());
        let chat = parse(text, &names, Some("chat"));
        assert_eq!((chat.get("infergate_queue_depth"), chat.len()), (Some(&3.0), 1));
        let odd = parse(text, &names, Some("odd } name \" here"));
        assert_eq!(odd.get("infergate_queue_depth"), Some(&4.5));
    }
}
