//! What goes wrong between infergate and an upstream: an endpoint in
//! config that is not one, and a request that got no response (or whose
//! body broke off). Their texts become the job's error and the logs'.

use std::error::Error;

/// Why an endpoint (or a replica's base URL) is not one infergate can use.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("{0}: dns:// needs a port (dns://name:port)")]
    NoPort(String),
    #[error("{0}: bad port")]
    BadPort(String),
    #[error("{0}: endpoints are http://host:port or dns://name:port")]
    Scheme(String),
    #[error("'{text}' is not a URL: {source}")]
    NotUrl { text: String, source: http::uri::InvalidUri },
    #[error("'{0}' needs a scheme and a host")]
    Incomplete(String),
    #[error("'{0}': only http and https upstreams are supported")]
    NotHttp(String),
}

/// Why a request got no response, or its body broke off.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// No TCP connection to the authority (`host:port`).
    #[error("connect to {authority}: {source}")]
    Connect { authority: http::uri::Authority, source: std::io::Error },
    /// HTTP failed on the connection or in the body; the text has the
    /// causes that hyper's top-level message leaves out.
    #[error("{}", describe(.0.as_ref()))]
    Http(Box<dyn Error + Send + Sync>),
    /// The request's URI has no host.
    #[error("the request has no host")]
    NoHost,
    /// The request could not be built (a path or header that is not valid).
    #[error(transparent)]
    Request(#[from] http::Error),
    /// A `dns://` name (or the hosts file that stands in for DNS) could not
    /// be read.
    #[error("{name}: {source}")]
    Resolve { name: String, source: std::io::Error },
}

impl TransportError {
    /// hyper's (or hyper-util's) error.
    pub fn http(error: impl Error + Send + Sync + 'static) -> Self {
        TransportError::Http(Box::new(error))
    }
}

/// An error with its causes, which hyper's top-level messages leave out
/// ("client error (Connect)" says little without "connection refused").
pub fn describe(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}
