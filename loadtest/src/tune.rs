//! `infergate-load tune`: a capacity result (one gateway replica's) turned into autoscaler
//! settings, and those settings tried offline on a traffic trace.
//!
//! The scaling metric is in-flight requests per pod (`infergate_requests_in_flight`), whose
//! target comes from Little's law at the SLO point: a replica at its capacity `C` answering
//! in `W` (mean latency at the highest passing step) holds `L = C × W` requests, and the
//! target is `L × (1 − headroom)`, so that scaling starts before the SLO is at risk. Minimum
//! and maximum replicas follow from the baseline and peak rates at the targeted per-replica
//! rate. Out come a Kubernetes HPA v2 (through prometheus-adapter, which serves the gauge
//! as a Pods metric) and a KEDA ScaledObject with a Prometheus trigger, both with the same
//! behaviour, and a replay of the HPA algorithm over a trace: the predicted share of
//! requests served within capacity and the replica-hours.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{json, Value};

use crate::capacity::{CapacityReport, Step};

/// The gauge the autoscalers read.
pub const METRIC: &str = "infergate_requests_in_flight";

/// What `tune` needs besides the capacity report.
#[derive(Debug, Clone, PartialEq)]
pub struct TuneSettings {
    /// Deployment (and autoscaler) name.
    pub name: String,
    pub namespace: String,
    /// Requests per second at the quietest and busiest times.
    pub baseline_rate: f64,
    pub peak_rate: f64,
    /// Share of capacity kept free when scaling (0.2: scale at 80%).
    pub headroom: f64,
    /// Prometheus as KEDA reaches it.
    pub prometheus: String,
    /// Seconds a scale-down waits for the recommendation to stay low.
    pub scale_down_window_s: u32,
    /// Seconds from a scale-up decision to the new pod serving (replay only).
    pub pod_startup_s: f64,
}

/// The settings derived from the capacity result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Derived {
    /// One replica's capacity (mean of the searches), requests per second.
    pub capacity_per_s: f64,
    /// Mean latency at the highest passing step, seconds.
    pub latency_s: f64,
    /// Little's law at the SLO point: requests in flight at capacity.
    pub in_flight_at_capacity: f64,
    /// The per-pod target of the in-flight metric.
    pub target_in_flight: f64,
    /// The per-replica rate the target corresponds to.
    pub target_rate_per_replica: f64,
    pub min_replicas: u32,
    pub max_replicas: u32,
}

/// Derive the autoscaler settings.
pub fn derive(report: &CapacityReport, settings: &TuneSettings) -> anyhow::Result<Derived> {
    let capacity = report.capacity.ok_or_else(|| anyhow::anyhow!("the capacity report found no capacity"))?;
    anyhow::ensure!((0.0..1.0).contains(&settings.headroom), "--headroom is in [0, 1)");
    anyhow::ensure!(
        settings.baseline_rate >= 0.0
            && settings.peak_rate >= settings.baseline_rate
            && settings.peak_rate > 0.0,
        "need 0 <= --baseline-rate <= --peak-rate, and a positive peak"
    );
    let at_capacity: Vec<&Step> = report
        .searches
        .iter()
        .filter_map(|s| s.steps.iter().filter(|st| st.passed).max_by(|a, b| a.rate.total_cmp(&b.rate)))
        .collect();
    let latencies: Vec<f64> =
        at_capacity.iter().filter_map(|s| s.latency_ms.as_ref().map(|l| l.mean / 1000.0)).collect();
    anyhow::ensure!(!latencies.is_empty(), "the capacity report has no latency at its passing steps");
    let latency_s = latencies.iter().sum::<f64>() / latencies.len() as f64;
    let in_flight = capacity * latency_s;
    let keep = 1.0 - settings.headroom;
    let per_replica = capacity * keep;
    let replicas = |rate: f64| ((rate / per_replica).ceil() as u32).max(1);
    Ok(Derived {
        capacity_per_s: capacity,
        latency_s,
        in_flight_at_capacity: in_flight,
        target_in_flight: in_flight * keep,
        target_rate_per_replica: per_replica,
        min_replicas: replicas(settings.baseline_rate),
        max_replicas: replicas(settings.peak_rate).max(replicas(settings.baseline_rate)),
    })
}

/// HPA v2 behaviour: scale up fast (double, or 4 pods, every 15 s), down slowly (10% a
/// minute after the window).
fn behavior(settings: &TuneSettings) -> Value {
    json!({
        "scaleUp": {
            "stabilizationWindowSeconds": 0,
            "selectPolicy": "Max",
            "policies": [
                {"type": "Percent", "value": 100, "periodSeconds": 15},
                {"type": "Pods", "value": 4, "periodSeconds": 15},
            ],
        },
        "scaleDown": {
            "stabilizationWindowSeconds": settings.scale_down_window_s,
            "selectPolicy": "Max",
            "policies": [{"type": "Percent", "value": 10, "periodSeconds": 60}],
        },
    })
}

/// A Kubernetes quantity for a target value, in thousandths.
fn quantity(value: f64) -> String {
    format!("{}m", (value * 1000.0).round().max(1.0) as u64)
}

/// What the HPA needs besides itself: prometheus-adapter serving the gauge as a Pods metric.
pub const HPA_HEADER: &str = "\
# Generated by `infergate-load tune`. The HPA reads infergate_requests_in_flight as a Pods
# metric through prometheus-adapter; a rule for it (adapter config `rules:`):
#   - seriesQuery: 'infergate_requests_in_flight{namespace!=\"\",pod!=\"\"}'
#     resources: {overrides: {namespace: {resource: namespace}, pod: {resource: pod}}}
#     metricsQuery: 'sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)'
";

/// The HPA v2 manifest.
pub fn hpa(derived: &Derived, settings: &TuneSettings) -> Value {
    json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": settings.name, "namespace": settings.namespace},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": settings.name},
            "minReplicas": derived.min_replicas,
            "maxReplicas": derived.max_replicas,
            "metrics": [{
                "type": "Pods",
                "pods": {
                    "metric": {"name": METRIC},
                    "target": {"type": "AverageValue", "averageValue": quantity(derived.target_in_flight)},
                },
            }],
            "behavior": behavior(settings),
        },
    })
}

/// The KEDA ScaledObject with a Prometheus trigger on the same metric.
pub fn keda(derived: &Derived, settings: &TuneSettings) -> Value {
    let query =
        format!("sum({METRIC}{{namespace=\"{}\",pod=~\"{}-.*\"}})", settings.namespace, settings.name);
    json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": settings.name, "namespace": settings.namespace},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": settings.name},
            "pollingInterval": 15,
            "cooldownPeriod": settings.scale_down_window_s,
            "minReplicaCount": derived.min_replicas,
            "maxReplicaCount": derived.max_replicas,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": behavior(settings)}},
            "triggers": [{
                "type": "prometheus",
                "metricType": "AverageValue",
                "metadata": {
                    "serverAddress": settings.prometheus,
                    "query": query,
                    "threshold": format!("{:.3}", derived.target_in_flight),
                },
            }],
        },
    })
}

/// Block-style YAML of a JSON value (strings double-quoted, which YAML reads as JSON does).
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    write_yaml(value, 0, &mut out);
    out
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => Value::String(s.clone()).to_string(),
        other => other.to_string(),
    }
}

fn write_yaml(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match v {
                    Value::Object(m) if !m.is_empty() => {
                        let _ = writeln!(out, "{pad}{key}:");
                        write_yaml(v, indent + 2, out);
                    }
                    Value::Array(a) if !a.is_empty() => {
                        let _ = writeln!(out, "{pad}{key}:");
                        write_yaml(v, indent, out);
                    }
                    other => {
                        let _ = writeln!(out, "{pad}{key}: {}", scalar(other));
                    }
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                let mut inner = String::new();
                write_yaml(item, indent + 2, &mut inner);
                // The first line of the item takes the dash.
                let body = inner.strip_prefix(&" ".repeat(indent + 2)).unwrap_or(&inner);
                let _ = write!(out, "{pad}- {body}");
                if !body.ends_with('\n') {
                    out.push('\n');
                }
            }
        }
        other => {
            let _ = writeln!(out, "{pad}{}", scalar(other));
        }
    }
}

/// A traffic trace: (seconds from start, requests per second) points, linear between them.
pub fn parse_trace(text: &str) -> anyhow::Result<Vec<(f64, f64)>> {
    let mut points = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with(|c: char| c.is_ascii_alphabetic()) {
            continue; // blank, comment or a header row
        }
        let (t, r) = line
            .split_once(',')
            .ok_or_else(|| anyhow::anyhow!("trace line {}: expected 'seconds,rate'", n + 1))?;
        let (t, r): (f64, f64) = (t.trim().parse()?, r.trim().parse()?);
        anyhow::ensure!(t.is_finite() && r.is_finite() && r >= 0.0, "trace line {}: bad numbers", n + 1);
        anyhow::ensure!(
            points.last().is_none_or(|&(last, _)| t > last),
            "trace line {}: time must increase",
            n + 1
        );
        points.push((t, r));
    }
    anyhow::ensure!(points.len() >= 2, "a trace needs at least two points");
    Ok(points)
}

fn rate_at(trace: &[(f64, f64)], t: f64) -> f64 {
    match trace.iter().position(|&(at, _)| at > t) {
        None => trace.last().map_or(0.0, |p| p.1),
        Some(0) => trace[0].1,
        Some(i) => {
            let ((t0, r0), (t1, r1)) = (trace[i - 1], trace[i]);
            r0 + (r1 - r0) * (t - t0) / (t1 - t0)
        }
    }
}

/// What the replay predicts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Replay {
    /// Share of requests arriving while the ready replicas had capacity for them.
    pub slo_attainment: f64,
    pub replica_hours: f64,
    pub peak_replicas: u32,
    /// Scale events (time in s, from, to).
    pub events: Vec<(f64, u32, u32)>,
}

/// Replay the HPA algorithm (15 s sync period, 10% tolerance, the behaviour's policies and
/// stabilisation windows) over `trace`. Each ready replica serves up to the measured
/// capacity; its in-flight metric is its rate × the latency at the SLO point (Little).
pub fn replay(derived: &Derived, settings: &TuneSettings, trace: &[(f64, f64)]) -> Replay {
    const SYNC_S: f64 = 15.0;
    const TOLERANCE: f64 = 0.1;
    const DT: f64 = 1.0;
    let (start, end) = (trace[0].0, trace[trace.len() - 1].0);
    let mut replicas = derived.min_replicas;
    // Pods asked for and when each becomes ready.
    let mut starting: Vec<f64> = Vec::new();
    let mut ready = derived.min_replicas;
    let mut recommendations: Vec<(f64, u32)> = Vec::new();
    // Scale-ups in the last period, for the policies.
    let mut history: Vec<(f64, u32)> = vec![(start, replicas)];
    let (mut served, mut total, mut replica_seconds) = (0.0, 0.0, 0.0);
    let mut events = Vec::new();
    let mut peak = replicas;
    let mut next_sync = start;
    let mut t = start;
    while t < end {
        starting.retain(|&at| {
            if at <= t {
                ready += 1;
                false
            } else {
                true
            }
        });
        let rate = rate_at(trace, t);
        let capacity = f64::from(ready) * derived.capacity_per_s;
        total += rate * DT;
        served += rate.min(capacity) * DT;
        replica_seconds += f64::from(replicas) * DT;
        if t >= next_sync {
            next_sync += SYNC_S;
            // The metric averages over the pods that are ready (the HPA ignores unready ones).
            let per_pod = rate / f64::from(ready.max(1)) * derived.latency_s;
            let ratio = per_pod / derived.target_in_flight;
            let desired = if (ratio - 1.0).abs() <= TOLERANCE {
                replicas
            } else {
                (f64::from(ready.max(1)) * ratio).ceil() as u32
            }
            .clamp(derived.min_replicas, derived.max_replicas);
            recommendations.push((t, desired));
            let window = f64::from(settings.scale_down_window_s);
            recommendations.retain(|&(at, _)| t - at <= window);
            let stabilized = if desired < replicas {
                recommendations.iter().map(|r| r.1).max().unwrap_or(desired).min(replicas)
            } else {
                desired
            };
            let limited = if stabilized > replicas {
                // Max of: +100% over the last 15 s, +4 pods over the last 15 s.
                let base = history.iter().filter(|h| t - h.0 <= 15.0).map(|h| h.1).min().unwrap_or(replicas);
                stabilized.min((base * 2).max(base + 4))
            } else if stabilized < replicas {
                // 10% of the replicas 60 s ago, at least one pod.
                let base = history.iter().filter(|h| t - h.0 <= 60.0).map(|h| h.1).max().unwrap_or(replicas);
                let floor = base.saturating_sub(((f64::from(base) * 0.1).ceil() as u32).max(1));
                stabilized.max(floor)
            } else {
                replicas
            };
            if limited != replicas {
                events.push((t - start, replicas, limited));
                if limited > replicas {
                    starting.extend(std::iter::repeat_n(
                        t + settings.pod_startup_s,
                        (limited - replicas) as usize,
                    ));
                } else {
                    let gone = replicas - limited;
                    // Pods still starting go first, then ready ones.
                    let from_starting = gone.min(starting.len() as u32);
                    starting.truncate(starting.len() - from_starting as usize);
                    ready -= gone - from_starting;
                }
                replicas = limited;
                peak = peak.max(replicas);
            }
            history.push((t, replicas));
            history.retain(|h| t - h.0 <= 60.0);
        }
        t += DT;
    }
    Replay {
        slo_attainment: if total > 0.0 { served / total } else { 1.0 },
        replica_hours: replica_seconds / 3600.0,
        peak_replicas: peak,
        events,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::{Search, Slo};
    use crate::report::{Latency, Metric};

    fn report(capacity: f64, mean_ms: f64) -> CapacityReport {
        let latency =
            Latency { mean: mean_ms, p50: mean_ms, p90: mean_ms, p99: mean_ms, p999: mean_ms, max: mean_ms };
        let step = |rate: f64, passed: bool| Step {
            rate,
            offered_per_s: rate,
            achieved_per_s: rate,
            latency_ms: Some(latency.clone()),
            slo_latency_ms: Some(mean_ms),
            goodput: 1.0,
            passed,
            because: Vec::new(),
            batch: None,
        };
        CapacityReport {
            url: "http://127.0.0.1:8080/v1/embeddings".into(),
            slo: Slo {
                metric: Metric::Latency,
                quantile: 0.99,
                latency_ms: 500.0,
                min_goodput: 0.99,
                min_throughput: 0.97,
            },
            searches: vec![Search {
                steps: vec![step(capacity / 2.0, true), step(capacity, true), step(capacity * 1.5, false)],
                capacity: Some(capacity),
                knee: Some(capacity / 2.0),
                limited_by_generator: false,
            }],
            capacity: Some(capacity),
            ci95: None,
        }
    }

    pub(crate) fn settings() -> TuneSettings {
        TuneSettings {
            name: "infergate".into(),
            namespace: "inference".into(),
            baseline_rate: 50.0,
            peak_rate: 900.0,
            headroom: 0.2,
            prometheus: "http://prometheus.monitoring:9090".into(),
            scale_down_window_s: 300,
            pod_startup_s: 30.0,
        }
    }

    #[test]
    fn targets_follow_littles_law_at_the_slo_point() {
        let d = derive(&report(100.0, 200.0), &settings()).unwrap();
        assert_eq!(d.in_flight_at_capacity, 20.0, "100 req/s × 0.2 s");
        assert!((d.target_in_flight - 16.0).abs() < 1e-9);
        assert!((d.target_rate_per_replica - 80.0).abs() < 1e-9);
        assert_eq!((d.min_replicas, d.max_replicas), (1, 12), "50/80 → 1, 900/80 → 12");
        assert_eq!(hpa(&d, &settings())["spec"]["metrics"][0]["pods"]["target"]["averageValue"], "16000m");
    }

    #[test]
    fn yaml_has_block_maps_and_lists() {
        let yaml = to_yaml(&json!({"a": {"b": 1, "c": "x y"}, "l": [{"k": 1, "m": 2}, 3], "e": []}));
        assert_eq!(yaml, "a:\n  b: 1\n  c: \"x y\"\ne: []\nl:\n- k: 1\n  m: 2\n- 3\n");
    }

    #[test]
    fn the_replay_scales_up_for_a_peak_and_back_down_after_the_window() {
        let d = derive(&report(100.0, 200.0), &settings()).unwrap();
        let trace = parse_trace("seconds,rate\n0,50\n600,50\n660,700\n1800,700\n1860,50\n3600,50\n").unwrap();
        let r = replay(&d, &settings(), &trace);
        assert!(r.peak_replicas >= 9, "700 req/s at 80 per replica needs 9: {r:?}");
        assert!(r.slo_attainment > 0.95 && r.slo_attainment < 1.0, "only the ramp outruns scaling: {r:?}");
        let last = r.events.last().unwrap();
        assert!(last.2 < last.1, "it scales back down: {r:?}");
        assert!(
            r.events.iter().filter(|e| e.2 < e.1).all(|e| e.0 >= 1800.0 + 300.0),
            "not before the window after the peak ends: {r:?}"
        );
        assert!(r.replica_hours > 1.0 && r.replica_hours < 12.0, "{r:?}");
    }

    #[test]
    fn bad_traces_are_refused() {
        assert!(parse_trace("0,1\n").is_err());
        assert!(parse_trace("0,1\n0,2\n").is_err());
        assert!(parse_trace("0,1\n5,-2\n").is_err());
        assert!(parse_trace("0;1\n5;2\n").is_err());
    }
}
