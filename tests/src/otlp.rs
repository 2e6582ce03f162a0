//! An in-process OTLP/HTTP receiver for tests: collects every span, metric
//! and log record a gateway exports to `POST /v1/traces`, `/v1/metrics` and
//! `/v1/logs` (protobuf).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// One received span with its attributes flattened to strings.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub kind: i32,
    pub attributes: HashMap<String, String>,
    /// (trace id, span id) of each link.
    pub links: Vec<(String, String)>,
    pub service_name: String,
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// One data point of a received metric.
#[derive(Debug, Clone)]
pub struct ReceivedPoint {
    pub attributes: HashMap<String, String>,
    /// A sum's or gauge's value; a histogram's count.
    pub value: f64,
    /// A histogram's bucket counts (empty for sums and gauges).
    pub buckets: Vec<u64>,
    /// Trace ids of the point's exemplars.
    pub exemplar_traces: Vec<String>,
}

/// One received metric (one export of it).
#[derive(Debug, Clone)]
pub struct ReceivedMetric {
    pub name: String,
    pub unit: String,
    /// `sum`, `gauge` or `histogram`.
    pub kind: &'static str,
    pub points: Vec<ReceivedPoint>,
    pub service_name: String,
}

/// One received log record.
#[derive(Debug, Clone)]
pub struct ReceivedLog {
    pub body: String,
    pub severity: String,
    pub trace_id: String,
    pub span_id: String,
    pub attributes: HashMap<String, String>,
}

#[derive(Default)]
struct Store {
    spans: Mutex<Vec<ReceivedSpan>>,
    metrics: Mutex<Vec<ReceivedMetric>>,
    logs: Mutex<Vec<ReceivedLog>>,
}

/// A running receiver; what it receives accumulates.
pub struct Receiver {
    pub endpoint: String,
    store: Arc<Store>,
}

fn value(v: &Option<Value>) -> String {
    match v {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn convert(span: &Span, service_name: &str) -> ReceivedSpan {
    ReceivedSpan {
        name: span.name.clone(),
        trace_id: hex(&span.trace_id),
        span_id: hex(&span.span_id),
        parent_span_id: hex(&span.parent_span_id),
        kind: span.kind,
        attributes: span
            .attributes
            .iter()
            .map(|kv| (kv.key.clone(), value(&kv.value.as_ref().and_then(|v| v.value.clone()))))
            .collect(),
        links: span.links.iter().map(|l| (hex(&l.trace_id), hex(&l.span_id))).collect(),
        service_name: service_name.to_owned(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attributes(kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> HashMap<String, String> {
    kvs.iter().map(|kv| (kv.key.clone(), value(&kv.value.as_ref().and_then(|v| v.value.clone())))).collect()
}

fn service(resource: &Option<opentelemetry_proto::tonic::resource::v1::Resource>) -> String {
    resource
        .as_ref()
        .map(|r| attributes(&r.attributes))
        .and_then(|a| a.get("service.name").cloned())
        .unwrap_or_default()
}

fn number(point: &opentelemetry_proto::tonic::metrics::v1::NumberDataPoint) -> ReceivedPoint {
    ReceivedPoint {
        attributes: attributes(&point.attributes),
        value: match point.value {
            Some(number_data_point::Value::AsDouble(d)) => d,
            Some(number_data_point::Value::AsInt(i)) => i as f64,
            None => f64::NAN,
        },
        buckets: Vec::new(),
        exemplar_traces: point.exemplars.iter().map(|e| hex(&e.trace_id)).collect(),
    }
}

async fn export_metrics(State(store): State<Arc<Store>>, body: Bytes) -> impl IntoResponse {
    let Ok(request) = ExportMetricsServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new()).into_response();
    };
    let mut received = Vec::new();
    for resource in &request.resource_metrics {
        let service_name = service(&resource.resource);
        for m in resource.scope_metrics.iter().flat_map(|s| &s.metrics) {
            let (kind, points) = match &m.data {
                Some(metric::Data::Sum(sum)) => ("sum", sum.data_points.iter().map(number).collect()),
                Some(metric::Data::Gauge(g)) => ("gauge", g.data_points.iter().map(number).collect()),
                Some(metric::Data::Histogram(h)) => (
                    "histogram",
                    h.data_points
                        .iter()
                        .map(|p| ReceivedPoint {
                            attributes: attributes(&p.attributes),
                            value: p.count as f64,
                            buckets: p.bucket_counts.clone(),
                            exemplar_traces: p.exemplars.iter().map(|e| hex(&e.trace_id)).collect(),
                        })
                        .collect(),
                ),
                _ => ("other", Vec::new()),
            };
            received.push(ReceivedMetric {
                name: m.name.clone(),
                unit: m.unit.clone(),
                kind,
                points,
                service_name: service_name.clone(),
            });
        }
    }
    if let Ok(mut all) = store.metrics.lock() {
        all.extend(received);
    }
    let reply = ExportMetricsServiceResponse::default().encode_to_vec();
    ([(header::CONTENT_TYPE, "application/x-protobuf")], reply).into_response()
}

async fn export_logs(State(store): State<Arc<Store>>, body: Bytes) -> impl IntoResponse {
    let Ok(request) = ExportLogsServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new()).into_response();
    };
    let records = request.resource_logs.iter().flat_map(|r| &r.scope_logs).flat_map(|s| &s.log_records);
    let received: Vec<ReceivedLog> = records
        .map(|r| ReceivedLog {
            body: value(&r.body.as_ref().and_then(|b| b.value.clone())),
            severity: r.severity_text.clone(),
            trace_id: hex(&r.trace_id),
            span_id: hex(&r.span_id),
            attributes: attributes(&r.attributes),
        })
        .collect();
    if let Ok(mut all) = store.logs.lock() {
        all.extend(received);
    }
    let reply = ExportLogsServiceResponse::default().encode_to_vec();
    ([(header::CONTENT_TYPE, "application/x-protobuf")], reply).into_response()
}

async fn export(State(store): State<Arc<Store>>, body: Bytes) -> impl IntoResponse {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new()).into_response();
    };
    let mut received = Vec::new();
    for resource in &request.resource_spans {
        let service = service(&resource.resource);
        for scope in &resource.scope_spans {
            received.extend(scope.spans.iter().map(|s| convert(s, &service)));
        }
    }
    if let Ok(mut all) = store.spans.lock() {
        all.extend(received);
    }
    let reply = ExportTraceServiceResponse::default().encode_to_vec();
    ([(header::CONTENT_TYPE, "application/x-protobuf")], reply).into_response()
}

impl Receiver {
    /// Listen on a free loopback port.
    pub async fn start() -> Receiver {
        let store = Arc::new(Store::default());
        let app = Receiver::app(store.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
        let endpoint = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { endpoint, store }
    }

    /// Listen over TLS (OTLP/HTTPS) on a free loopback port; the endpoint
    /// is `https://127.0.0.1:PORT`.
    pub async fn start_tls(config: Arc<rustls::ServerConfig>) -> Receiver {
        let store = Arc::new(Store::default());
        let addr = crate::tls::serve_tls(Receiver::app(store.clone()), config).await;
        Receiver { endpoint: format!("https://{addr}"), store }
    }

    fn app(store: Arc<Store>) -> Router {
        Router::new()
            .route("/v1/traces", post(export))
            .route("/v1/metrics", post(export_metrics))
            .route("/v1/logs", post(export_logs))
            .with_state(store)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.store.spans.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Every metric export received so far, oldest first.
    pub fn metrics(&self) -> Vec<ReceivedMetric> {
        self.store.metrics.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Every log record received so far.
    pub fn logs(&self) -> Vec<ReceivedLog> {
        self.store.logs.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Wait (at most `limit`) until `done` holds for the received spans.
    pub async fn wait_for(
        &self,
        limit: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let start = Instant::now();
        loop {
            let spans = self.spans();
            if done(&spans) || start.elapsed() > limit {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait (at most `limit`) until `done` holds for the received metrics.
    pub async fn wait_for_metrics(
        &self,
        limit: Duration,
        done: impl Fn(&[ReceivedMetric]) -> bool,
    ) -> Vec<ReceivedMetric> {
        let start = Instant::now();
        loop {
            let metrics = self.metrics();
            if done(&metrics) || start.elapsed() > limit {
                return metrics;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
