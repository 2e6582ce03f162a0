//! OTLP metric export from the Prometheus registry.
//!
//! Every metric is recorded once, in [`crate::Metrics`]; a thread reads the
//! registry's OpenMetrics exposition every interval and sends it as OTLP
//! (cumulative sums, gauges and explicit-bucket histograms with their
//! exemplars), under the OpenTelemetry names in [`names::OTLP_METRICS`].

use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, metric, number_data_point, AggregationTemporality, Exemplar, Gauge, Histogram,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use crate::names;
use crate::openmetrics::{self, Family, Kind, Sample};
use crate::queue::count;
use crate::transport::Transport;
use crate::Metrics;

/// Where and how often metrics go.
#[derive(Debug, Clone)]
pub(crate) struct MetricsTarget {
    pub transport: Transport,
    pub endpoint: String,
    pub headers: Vec<(String, String)>,
    pub interval: Duration,
    pub resource: Vec<(String, String)>,
}

/// The running exporter; [`MetricsExporter::shutdown`] sends a last export.
pub(crate) struct MetricsExporter {
    stop: SyncSender<()>,
    worker: JoinHandle<()>,
}

impl MetricsExporter {
    pub(crate) fn start(metrics: Arc<Metrics>, target: MetricsTarget) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::sync_channel(1);
        let worker = std::thread::Builder::new().name("otlp-metrics".into()).spawn(move || {
            let start = unix_nanos(SystemTime::now());
            let send = || {
                let families = match openmetrics::parse(&metrics.encode()) {
                    Ok(families) => families,
                    Err(error) => {
                        tracing::warn!(%error, "metrics exposition unreadable; not exported");
                        return;
                    }
                };
                let request = request(&families, &target.resource, start, unix_nanos(SystemTime::now()));
                let points = points(&request);
                match export(&target, request) {
                    Ok(()) => count("metrics", "exported", points),
                    Err(error) => {
                        count("metrics", "export_failed", points);
                        tracing::debug!(%error, "OTLP metric export failed");
                    }
                }
            };
            loop {
                match stopped.recv_timeout(target.interval) {
                    Err(RecvTimeoutError::Timeout) => send(),
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return send(),
                }
            }
        })?;
        Ok(MetricsExporter { stop, worker })
    }

    /// Export once more and stop.
    pub(crate) fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.worker.join();
    }
}

/// Why one export failed: logged at debug, counted as `export_failed`.
#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    #[error("receiver answered {0}")]
    Status(reqwest::StatusCode),
    #[error("connect timed out")]
    ConnectTimeout,
    #[error(transparent)]
    Connect(#[from] tonic::transport::Error),
    #[error(transparent)]
    Rpc(#[from] tonic::Status),
}

fn export(target: &MetricsTarget, request: ExportMetricsServiceRequest) -> Result<(), ExportError> {
    match &target.transport {
        Transport::Http(client) => {
            let url = format!("{}/v1/metrics", target.endpoint.trim_end_matches('/'));
            let mut call = client.post(url).header("content-type", "application/x-protobuf");
            for (key, value) in &target.headers {
                call = call.header(key, value);
            }
            let response = call.body(request.encode_to_vec()).send()?;
            match response.status() {
                status if status.is_success() => Ok(()),
                status => Err(ExportError::Status(status)),
            }
        }
        Transport::Grpc(handle) => handle.block_on(async {
            let connect = MetricsServiceClient::connect(target.endpoint.clone());
            let mut client = tokio::time::timeout(Duration::from_secs(5), connect)
                .await
                .map_err(|_| ExportError::ConnectTimeout)??;
            let mut call = tonic::Request::new(request);
            call.set_timeout(Duration::from_secs(5));
            for (key, value) in &target.headers {
                let key = tonic::metadata::MetadataKey::from_bytes(key.as_bytes());
                if let (Ok(key), Ok(value)) = (key, value.parse()) {
                    call.metadata_mut().insert(key, value);
                }
            }
            client.export(call).await?;
            Ok(())
        }),
    }
}

fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Data points in a request (what the `metrics` counters count).
fn points(request: &ExportMetricsServiceRequest) -> usize {
    let metrics = request.resource_metrics.iter().flat_map(|r| &r.scope_metrics).flat_map(|s| &s.metrics);
    metrics
        .map(|m| match &m.data {
            Some(metric::Data::Sum(s)) => s.data_points.len(),
            Some(metric::Data::Gauge(g)) => g.data_points.len(),
            Some(metric::Data::Histogram(h)) => h.data_points.len(),
            _ => 0,
        })
        .sum()
}

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.to_owned())) }),
        ..Default::default()
    }
}

/// Labels as attributes under their OpenTelemetry names; `le` is not one.
fn attributes(sample: &Sample) -> Vec<KeyValue> {
    let rename = |key: &str| {
        names::OTLP_LABELS.iter().find(|(prom, _)| *prom == key).map_or(key.to_owned(), |(_, o)| (*o).into())
    };
    sample.labels.iter().filter(|(k, _)| k != "le").map(|(k, v)| string(&rename(k), v)).collect()
}

/// The OTLP request for one reading of the registry.
pub(crate) fn request(
    families: &[Family],
    resource: &[(String, String)],
    start: u64,
    now: u64,
) -> ExportMetricsServiceRequest {
    let metrics = families.iter().filter_map(|family| metric(family, start, now)).collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource.iter().map(|(k, v)| string(k, v)).collect(),
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "infergate".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn metric(family: &Family, start: u64, now: u64) -> Option<Metric> {
    let (name, unit) = names::OTLP_METRICS
        .iter()
        .find(|(prom, _, _)| *prom == family.name)
        .map_or((family.name.as_str(), ""), |(_, otel, unit)| (*otel, *unit));
    let number = |sample: &Sample| NumberDataPoint {
        attributes: attributes(sample),
        start_time_unix_nano: start,
        time_unix_nano: now,
        value: Some(if sample.value.fract() == 0.0 && sample.value.abs() < 9.0e15 {
            // Integral: counters and integer gauges (an exact cast).
            number_data_point::Value::AsInt(sample.value as i64)
        } else {
            number_data_point::Value::AsDouble(sample.value)
        }),
        ..Default::default()
    };
    let data = match family.kind {
        Kind::Counter => metric::Data::Sum(Sum {
            data_points: family.samples.iter().filter(|s| s.suffix == "_total").map(number).collect(),
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        }),
        Kind::Gauge => {
            metric::Data::Gauge(Gauge { data_points: family.samples.iter().map(number).collect() })
        }
        Kind::Histogram => metric::Data::Histogram(Histogram {
            data_points: histogram_points(family, start, now),
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        }),
        Kind::Other => return None,
    };
    Some(Metric {
        name: name.to_owned(),
        description: family.help.trim_end_matches('.').to_owned(),
        unit: unit.to_owned(),
        data: Some(data),
        ..Default::default()
    })
}

/// One point per label set: cumulative `le` buckets into per-bucket counts.
fn histogram_points(family: &Family, start: u64, now: u64) -> Vec<HistogramDataPoint> {
    // (attributes, point, (upper bound, cumulative count) per bucket)
    type Building = (Vec<KeyValue>, HistogramDataPoint, Vec<(f64, f64)>);
    let mut points: Vec<Building> = Vec::new();
    for sample in &family.samples {
        let attributes = attributes(sample);
        let index = match points.iter().position(|(a, _, _)| *a == attributes) {
            Some(index) => index,
            None => {
                let point = HistogramDataPoint {
                    attributes: attributes.clone(),
                    start_time_unix_nano: start,
                    time_unix_nano: now,
                    ..Default::default()
                };
                points.push((attributes, point, Vec::new()));
                points.len() - 1
            }
        };
        let (_, point, buckets) = &mut points[index];
        match sample.suffix.as_str() {
            "_sum" => point.sum = Some(sample.value),
            "_count" => point.count = sample.value as u64,
            "_bucket" => {
                let Some(bound) = sample.label("le").and_then(|le| le.replace("+Inf", "inf").parse().ok())
                else {
                    continue;
                };
                buckets.push((bound, sample.value));
                if let Some(e) = &sample.exemplar {
                    point.exemplars.push(Exemplar {
                        time_unix_nano: now,
                        trace_id: e
                            .labels
                            .iter()
                            .find(|(k, _)| k == "trace_id")
                            .map_or(Vec::new(), |(_, v)| hex::decode(v).unwrap_or_default()),
                        value: Some(exemplar::Value::AsDouble(e.value)),
                        ..Default::default()
                    });
                }
            }
            _ => {}
        }
    }
    points
        .into_iter()
        .map(|(_, mut point, mut buckets)| {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut below = 0.0;
            for (bound, cumulative) in buckets {
                if bound.is_finite() {
                    point.explicit_bounds.push(bound);
                }
                point.bucket_counts.push((cumulative - below).max(0.0) as u64);
                below = cumulative;
            }
            point
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::RequestLabels;

    #[test]
    fn the_registry_becomes_otlp_with_otel_names_buckets_and_exemplars() {
        let metrics = Metrics::new();
        metrics.register_model("m", &["queue_full"]);
        let labels = RequestLabels {
            http_request_method: "POST".into(),
            http_route: "/v1/embeddings".into(),
            http_response_status_code: 200,
        };
        metrics.observe_request(&labels, 0.003, Some("4bf92f3577b34da6a3ce929d0e0e4736".into()));
        metrics.observe_request(&labels, 0.2, None);
        metrics.reject("m", "queue_full");
        let families = openmetrics::parse(&metrics.encode()).unwrap();
        let request = request(&families, &[("service.name".into(), "infergate".into())], 1, 2);
        let scope = &request.resource_metrics[0].scope_metrics[0];
        let find = |name: &str| scope.metrics.iter().find(|m| m.name == name).unwrap();

        let http = find("http.server.request.duration");
        assert_eq!(http.unit, "s");
        let Some(metric::Data::Histogram(h)) = &http.data else { panic!("{http:?}") };
        let point = &h.data_points[0];
        assert_eq!(point.count, 2);
        assert_eq!(point.explicit_bounds, crate::metrics::HTTP_DURATION_BUCKETS.to_vec());
        assert_eq!(point.bucket_counts.len(), point.explicit_bounds.len() + 1);
        assert_eq!(point.bucket_counts.iter().sum::<u64>(), 2);
        assert_eq!(point.bucket_counts[4], 1); // 0.001 < 0.003 ≤ 0.005
        assert_eq!(hex::encode(&point.exemplars[0].trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        let keys: Vec<&str> = point.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert!(keys.contains(&"http.route") && keys.contains(&"http.response.status_code"), "{keys:?}");

        let rejections = find("infergate.scheduler.rejections");
        let Some(metric::Data::Sum(sum)) = &rejections.data else { panic!("{rejections:?}") };
        assert!(sum.is_monotonic);
        assert_eq!(sum.data_points[0].value, Some(number_data_point::Value::AsInt(1)));
        assert!(points(&request) >= 3);
    }
}
