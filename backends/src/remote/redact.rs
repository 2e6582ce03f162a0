//! What of an upstream may be shown, and where: a replica's name without
//! the credentials its URL may carry (for logs, metric labels and spans),
//! and an upstream's refusal with every address, host name, path and
//! key-like token taken out (for clients).

/// Longest upstream message a client sees.
const MAX_MESSAGE: usize = 300;

/// `base` without user information, query or fragment:
/// `https://user:key@gpu-1:8000/v1?token=x` is `https://gpu-1:8000/v1`.
pub fn url(base: &str) -> String {
    let (scheme, rest) = base.split_once("://").unwrap_or(("", base));
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    if scheme.is_empty() {
        format!("{host}{path}")
    } else {
        format!("{scheme}://{host}{path}")
    }
}

/// An upstream's message for the client whose request it refused: URLs,
/// host names, addresses, paths and key-like tokens replaced by what they
/// are, control characters dropped, cut at 300 characters.
pub fn message(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_MESSAGE + 8));
    let mut bearer = false;
    for word in text.split_inclusive(char::is_whitespace) {
        let body = word.trim_end_matches(char::is_whitespace);
        let space = &word[body.len()..];
        // Keep the punctuation around a token: `'tools'`, `(host:80)`, `x,`.
        let start = body.find(|c: char| !is_wrapper(c)).unwrap_or(body.len());
        let end = body
            .rfind(|c: char| !is_wrapper(c) && c != '.' && c != ',' && c != ';')
            .map_or(start, |i| i + body[i..].chars().next().map_or(0, char::len_utf8));
        let (before, token, after) = (&body[..start], &body[start..end.max(start)], &body[end.max(start)..]);
        let replaced = if bearer && !token.is_empty() { Some("[redacted]") } else { classify(token) };
        bearer = token.eq_ignore_ascii_case("bearer") || token.eq_ignore_ascii_case("basic");
        out.push_str(before);
        out.push_str(replaced.unwrap_or(token));
        out.push_str(after);
        out.push_str(if space.is_empty() { "" } else { " " });
        if out.chars().count() > MAX_MESSAGE {
            break;
        }
    }
    let mut out: String = out.chars().filter(|c| !c.is_control()).collect();
    if out.chars().count() > MAX_MESSAGE {
        out = out.chars().take(MAX_MESSAGE - 1).collect();
        out.push('…');
    }
    out.trim_end().to_owned()
}

fn is_wrapper(c: char) -> bool {
    matches!(c, '\'' | '"' | '`' | '(' | ')' | '[' | ']' | '{' | '}' | '<' | '>')
}

/// What a token is, when it is something a client must not see.
fn classify(token: &str) -> Option<&'static str> {
    if token.is_empty() {
        return None;
    }
    if token.contains("://") {
        return Some("[url]");
    }
    if is_address(token) {
        return Some("[address]");
    }
    if is_path(token) {
        return Some("[path]");
    }
    if is_host(token) {
        return Some("[host]");
    }
    if is_key(token) {
        return Some("[redacted]");
    }
    None
}

/// IPv4 or IPv6, with or without a port.
fn is_address(token: &str) -> bool {
    let bare = token.trim_start_matches('[');
    let bare = bare.split(']').next().unwrap_or(bare);
    if bare.parse::<std::net::IpAddr>().is_ok() || token.parse::<std::net::SocketAddr>().is_ok() {
        return true;
    }
    let host = bare.rsplit_once(':').map_or(bare, |(host, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) {
            host
        } else {
            bare
        }
    });
    host.parse::<std::net::Ipv4Addr>().is_ok()
}

/// An absolute or home-relative file path, or a Windows one.
fn is_path(token: &str) -> bool {
    let unix = (token.starts_with('/') || token.starts_with("~/") || token.starts_with("./"))
        && token.len() > 1
        && token[1..].contains(['/', '.']);
    let windows =
        token.len() > 2 && token.as_bytes()[1] == b':' && matches!(token.as_bytes()[2], b'\\' | b'/');
    unix || windows || token.contains('\\')
}

/// `name.domain` (its last label a word of letters), `localhost`, or a
/// host name with a port.
fn is_host(token: &str) -> bool {
    let (host, port) = token.rsplit_once(':').unwrap_or((token, ""));
    if !port.is_empty() && !port.chars().all(|c| c.is_ascii_digit()) {
        return false;
    }
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    if !host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_') {
        return false;
    }
    let labels: Vec<&str> = host.split('.').collect();
    let dotted = labels.len() >= 2
        && labels.iter().all(|l| !l.is_empty())
        && labels.last().is_some_and(|tld| tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic()));
    dotted || (!port.is_empty() && !host.is_empty() && host.chars().any(|c| c.is_ascii_alphabetic()))
}

/// An API key or token: a known key prefix, or a long run of letters and
/// digits mixed.
fn is_key(token: &str) -> bool {
    let lower = token.to_ascii_lowercase();
    if ["sk-", "pk-", "rk-", "hf_", "ghp_", "xox", "akia", "eyj"].iter().any(|p| lower.starts_with(p))
        && token.len() >= 12
    {
        return true;
    }
    let keyish = token.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+' | '/' | '='));
    let letters = token.chars().any(|c| c.is_ascii_alphabetic());
    let digits = token.chars().filter(char::is_ascii_digit).count();
    keyish && letters && digits >= 4 && token.len() >= 20
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_urls() {
        assert_eq!(url("https://user:sk-secret@gpu-1:8000/v1?api_key=x#y"), "https://gpu-1:8000/v1");
        assert_eq!(url("http://10.0.0.7:8000"), "http://10.0.0.7:8000");
        assert_eq!(url("http://a@b@host/p"), "http://host/p");
    }

    #[test]
    fn refusals_keep_their_meaning_and_lose_their_secrets() {
        assert_eq!(
            message("'tools' is not supported by this model"),
            "'tools' is not supported by this model"
        );
        assert_eq!(
            message("max_tokens must be at most 4096 (got 5000)."),
            "max_tokens must be at most 4096 (got 5000)."
        );
        let leaky = "Incorrect API key provided: sk-proj-abcdEFGH12345678wxyz. Call https://api.internal.example/v1 \
                     from 10.1.2.3:8443 or [fd00::1]:80 (see /etc/vllm/config.yaml, C:\\models\\x, gpu-7.cluster.local:8000) \
                     with Bearer abc.def and token a1b2c3d4e5f6g7h8i9j0k1";
        let clean = message(leaky);
        for secret in [
            "sk-proj",
            "api.internal",
            "10.1.2.3",
            "fd00",
            "/etc/vllm",
            "models",
            "gpu-7",
            "abc.def",
            "a1b2c3",
        ] {
            assert!(!clean.contains(secret), "{secret} in {clean}");
        }
        assert!(
            clean.starts_with("Incorrect API key provided: [redacted]. Call [url] from [address]"),
            "{clean}"
        );
        assert!(clean.contains("(see [path],"), "{clean}");
        // Model names and versions are not hosts.
        assert_eq!(
            message("model gpt-3.5-turbo and e.g. v1.2 are fine"),
            "model gpt-3.5-turbo and e.g. v1.2 are fine"
        );
        // Long texts are cut, control characters dropped.
        let long = message(&format!("{}\u{1b}[31m", "word ".repeat(200)));
        assert!(long.chars().count() <= 300 && !long.contains('\u{1b}'), "{}", long.len());
    }
}
