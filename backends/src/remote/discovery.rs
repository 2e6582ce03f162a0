//! Where a remote model's replicas are: fixed base URLs, or `dns://`
//! names whose every address is a replica, resolved again and again.

use std::net::SocketAddr;

use super::error::{EndpointError, TransportError};

/// Where the replicas come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A fixed base URL.
    Static(String),
    /// `dns://name:port`: every address the name resolves to, on `port`.
    Dns { host: String, port: u16 },
}

impl Endpoint {
    /// `http(s)://...` or `dns://name:port`, as config writes it.
    pub fn parse(text: &str) -> Result<Self, EndpointError> {
        if let Some(rest) = text.strip_prefix("dns://") {
            let (host, port) = rest.rsplit_once(':').ok_or_else(|| EndpointError::NoPort(text.to_owned()))?;
            let port = port.parse().map_err(|_| EndpointError::BadPort(text.to_owned()))?;
            return Ok(Endpoint::Dns { host: host.to_owned(), port });
        }
        if text.starts_with("http://") || text.starts_with("https://") {
            super::transport::Base::parse(text)?;
            return Ok(Endpoint::Static(text.trim_end_matches('/').to_owned()));
        }
        Err(EndpointError::Scheme(text.to_owned()))
    }
}

/// Resolves names for `dns://` endpoints. `INFERGATE_HOSTS_FILE` (hosts(5)
/// format, re-read at every resolution) overrides the system resolver:
/// tests and local set-ups put several loopback addresses behind one name.
async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, TransportError> {
    if let Ok(path) = std::env::var("INFERGATE_HOSTS_FILE") {
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(text) => text,
            Err(source) => return Err(TransportError::Resolve { name: path, source }),
        };
        let mut found: Vec<SocketAddr> = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or(""))
            .filter_map(|l| {
                let mut parts = l.split_whitespace();
                let ip: std::net::IpAddr = parts.next()?.parse().ok()?;
                parts.any(|name| name == host).then_some(SocketAddr::new(ip, port))
            })
            .collect();
        found.sort();
        found.dedup();
        return Ok(found);
    }
    let mut found: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| TransportError::Resolve { name: host.to_owned(), source })?
        .collect();
    found.sort();
    found.dedup();
    Ok(found)
}

/// The base URLs the endpoints name now.
pub(super) async fn discover(endpoints: &[Endpoint]) -> Vec<String> {
    let mut bases = Vec::new();
    for e in endpoints {
        match e {
            Endpoint::Static(base) => bases.push(base.clone()),
            Endpoint::Dns { host, port } => match resolve(host, *port).await {
                Ok(addrs) => bases.extend(addrs.iter().map(|a| format!("http://{a}"))),
                Err(error) => tracing::warn!(%error, "cannot resolve upstream endpoint"),
            },
        }
    }
    bases
}
