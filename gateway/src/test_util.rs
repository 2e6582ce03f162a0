//! Helpers for the gateway's unit tests.

use http::HeaderMap;

/// A header map from name/value pairs.
pub fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.insert(*k, v.parse().unwrap());
    }
    map
}
