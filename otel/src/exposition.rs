//! Reading Prometheus' text exposition format (and OpenMetrics text): each
//! sample's name, labels and value. The load tool reads the gateway's own
//! metrics with it, and the remote backend the load gauges its upstreams
//! publish (vLLM, TGI, SGLang, Triton, another infergate).

/// One sample line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    /// The label set as written, without its braces.
    labels: &'a str,
    pub value: f64,
}

impl Sample<'_> {
    /// The value of label `key`, unescaped; `None` when the sample has no such label.
    pub fn label(&self, key: &str) -> Option<String> {
        let mut rest = self.labels;
        loop {
            rest = rest.trim_start_matches([',', ' ']);
            let (name, after) = rest.split_once('=')?;
            let after = after.trim_start().strip_prefix('"')?;
            let (value, end) = quoted(after)?;
            if name.trim() == key {
                return Some(value);
            }
            rest = &after[end..];
        }
    }
}

/// The samples of `text` with a finite value, in order; comments, blank and
/// malformed lines are skipped.
pub fn samples(text: &str) -> impl Iterator<Item = Sample<'_>> {
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).filter_map(|line| {
        let name_end = line.find(|c: char| c == '{' || c.is_whitespace()).unwrap_or(line.len());
        let name = &line[..name_end];
        // The value follows the labels (which may hold spaces and braces inside quotes).
        let (labels, rest) = match line[name_end..].strip_prefix('{') {
            Some(labels) => {
                let end = labels_end(labels)?;
                (&labels[..end - 1], &labels[end..])
            }
            None => ("", &line[name_end..]),
        };
        let value = rest.split_whitespace().next()?.parse::<f64>().ok().filter(|v| v.is_finite())?;
        Some(Sample { name, labels, value })
    })
}

/// The index just past the `}` closing a label set, skipping quoted values.
fn labels_end(labels: &str) -> Option<usize> {
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in labels.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return Some(i + 1),
            _ => {}
        }
    }
    None
}

/// A quoted label value's text (after its opening quote), unescaped, and
/// the index just past its closing quote.
fn quoted(text: &str) -> Option<(String, usize)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, i + 1)),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_with_labels_escapes_timestamps_and_bad_values() {
        let text = r#"# HELP vllm:num_requests_waiting Requests waiting.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="llama"} 3
infergate_queue_depth{model="odd } name \" here",x="a,b"} 4.5
tgi_queue_size 7 1700000000000
broken{model="x" 1
nan{a="b"} NaN

"#;
        let all: Vec<Sample> = samples(text).collect();
        assert_eq!(
            all.iter().map(|s| (s.name, s.value)).collect::<Vec<_>>(),
            [("vllm:num_requests_waiting", 3.0), ("infergate_queue_depth", 4.5), ("tgi_queue_size", 7.0)]
        );
        assert_eq!(all[0].label("model_name").as_deref(), Some("llama"));
        assert_eq!(all[0].label("engine").as_deref(), Some("0"));
        assert_eq!(all[0].label("model"), None);
        assert_eq!(all[1].label("model").as_deref(), Some("odd } name \" here"));
        assert_eq!(all[1].label("x").as_deref(), Some("a,b"));
        assert_eq!(all[2].label("model"), None);
    }
}
