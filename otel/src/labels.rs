//! The label sets of the gateway's metrics.

use prometheus_client::encoding::EncodeLabelSet;

/// Labels of an HTTP request, named as the semantic conventions name them.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub http_request_method: String,
    pub http_route: String,
    pub http_response_status_code: u16,
}

/// The exemplar of a latency observation: the trace it came from, so a
/// dashboard panel can link to the exact trace.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceLabels {
    pub trace_id: String,
}

/// Labels that name a model.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
}

/// Labels that name a remote model's replica (its base URL).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplicaLabels {
    pub model: String,
    pub replica: String,
}

/// Labels of a job moved from `model` to its `fallback`, and why.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FallbackLabels {
    pub model: String,
    pub fallback: String,
    pub reason: String,
}

/// Labels that name a model and why a job did not run.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub model: String,
    pub reason: String,
}
