//! A reader for the OpenMetrics text that [`crate::Metrics::encode`] writes,
//! so the one registry behind `/metrics` also feeds OTLP metric export:
//! every metric is recorded once and both outputs always agree.
//!
//! It reads the subset prometheus-client writes: `# HELP`, `# TYPE`,
//! `# UNIT`, `# EOF`, samples with quoted labels and an optional exemplar.

/// The type of a metric family (`# TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    /// Anything else (info, stateset, unknown): not exported over OTLP.
    Other,
}

/// An exemplar: labels (the trace id) and the observed value.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// One sample line: `family{labels} value # {exemplar} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// What follows the family name: `_total`, `_bucket`, `_sum`, `_count` or nothing.
    pub suffix: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
    pub exemplar: Option<Exemplar>,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A metric family and its samples, in exposition order.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub kind: Kind,
    pub help: String,
    pub samples: Vec<Sample>,
}

/// A line of the exposition that does not parse, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {problem}: {text}")]
pub struct ParseError {
    /// Counted from 1.
    pub line: usize,
    pub problem: Problem,
    pub text: String,
}

/// What is wrong with a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("bad comment")]
    BadComment,
    #[error("sample without a family")]
    NoFamily,
    #[error("no value")]
    NoValue,
    #[error("exemplar without a value")]
    ExemplarWithoutValue,
    #[error("expected '{{'")]
    ExpectedBrace,
    #[error("expected label=\"value\"")]
    ExpectedLabel,
    #[error("unterminated escape")]
    UnterminatedEscape,
    #[error("unterminated label value")]
    UnterminatedValue,
    #[error("not a number: {0}")]
    NotANumber(String),
}

/// Read an exposition; a line that does not parse is an error naming it.
pub fn parse(text: &str) -> Result<Vec<Family>, ParseError> {
    let mut families: Vec<Family> = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let fail = |problem: Problem| ParseError { line: number + 1, problem, text: line.to_owned() };
        if line.is_empty() || line == "# EOF" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let (keyword, rest) = rest.split_once(' ').ok_or_else(|| fail(Problem::BadComment))?;
            let (name, value) = rest.split_once(' ').unwrap_or((rest, ""));
            let family = family(&mut families, name);
            match keyword {
                "TYPE" => {
                    family.kind = match value {
                        "counter" => Kind::Counter,
                        "gauge" => Kind::Gauge,
                        "histogram" => Kind::Histogram,
                        _ => Kind::Other,
                    }
                }
                "HELP" => family.help = unescape(value),
                _ => {}
            }
            continue;
        }
        let (sample_name, sample) = sample(line).map_err(fail)?;
        // The family is the longest declared name that prefixes the sample's.
        let owner = families
            .iter_mut()
            .filter(|f| sample_name.starts_with(f.name.as_str()))
            .max_by_key(|f| f.name.len())
            .ok_or_else(|| fail(Problem::NoFamily))?;
        let suffix = sample_name[owner.name.len()..].to_owned();
        owner.samples.push(Sample { suffix, ..sample });
    }
    Ok(families)
}

fn family<'a>(families: &'a mut Vec<Family>, name: &str) -> &'a mut Family {
    let index = match families.iter().position(|f| f.name == name) {
        Some(index) => index,
        None => {
            families.push(Family {
                name: name.to_owned(),
                kind: Kind::Other,
                help: String::new(),
                samples: Vec::new(),
            });
            families.len() - 1
        }
    };
    &mut families[index]
}

/// `name{labels} value [timestamp] [# {labels} value [timestamp]]`.
fn sample(line: &str) -> Result<(String, Sample), Problem> {
    let name_end = line.find(['{', ' ']).ok_or(Problem::NoValue)?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if rest.starts_with('{') {
        let (parsed, after) = label_set(rest)?;
        labels = parsed;
        rest = after;
    }
    let (value_part, exemplar_part) = match rest.split_once(" # ") {
        Some((v, e)) => (v, Some(e)),
        None => (rest, None),
    };
    let value = number(value_part.split_whitespace().next().ok_or(Problem::NoValue)?)?;
    let exemplar = exemplar_part
        .map(|e| -> Result<Exemplar, Problem> {
            let (labels, after) = label_set(e)?;
            let value = number(after.split_whitespace().next().ok_or(Problem::ExemplarWithoutValue)?)?;
            Ok(Exemplar { labels, value })
        })
        .transpose()?;
    Ok((name, Sample { suffix: String::new(), labels, value, exemplar }))
}

/// Label names and values, in order.
type Labels = Vec<(String, String)>;

/// `{a="x",b="y"}` and what follows it.
fn label_set(text: &str) -> Result<(Labels, &str), Problem> {
    let mut rest = text.strip_prefix('{').ok_or(Problem::ExpectedBrace)?;
    let mut labels = Vec::new();
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (key, after) = rest.split_once("=\"").ok_or(Problem::ExpectedLabel)?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err(Problem::UnterminatedEscape),
                },
                Some((_, c)) => value.push(c),
                None => return Err(Problem::UnterminatedValue),
            }
        };
        labels.push((key.to_owned(), value));
        rest = &after[end + 1..];
    }
}

fn number(text: &str) -> Result<f64, Problem> {
    match text {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text.parse().map_err(|_| Problem::NotANumber(text.to_owned())),
    }
}

fn unescape(text: &str) -> String {
    text.replace("\\n", "\n").replace("\\\\", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP http_server_request_duration_seconds Duration of HTTP server requests.
# TYPE http_server_request_duration_seconds histogram
http_server_request_duration_seconds_sum{http_route="/v1/x",code="2\"0\\0"} 0.5
http_server_request_duration_seconds_count{http_route="/v1/x",code="2\"0\\0"} 2
http_server_request_duration_seconds_bucket{le="0.1",http_route="/v1/x",code="2\"0\\0"} 1 # {trace_id="ab"} 0.05
http_server_request_duration_seconds_bucket{le="+Inf",http_route="/v1/x",code="2\"0\\0"} 2
# HELP infergate_scheduler_rejections Jobs refused.
# TYPE infergate_scheduler_rejections counter
infergate_scheduler_rejections_total{model="m",reason="queue_full"} 3
# TYPE infergate_requests_in_flight gauge
infergate_requests_in_flight 1
# EOF
"#;

    #[test]
    fn reads_families_samples_labels_and_exemplars() {
        let families = parse(TEXT).unwrap();
        assert_eq!(families.len(), 3);
        let h = &families[0];
        assert_eq!((h.kind, h.samples.len()), (Kind::Histogram, 4));
        assert_eq!(h.help, "Duration of HTTP server requests.");
        let bucket = &h.samples[2];
        assert_eq!(bucket.suffix, "_bucket");
        assert_eq!(bucket.label("le"), Some("0.1"));
        assert_eq!(bucket.label("code"), Some("2\"0\\0"));
        let exemplar = bucket.exemplar.as_ref().unwrap();
        assert_eq!((exemplar.labels[0].1.as_str(), exemplar.value), ("ab", 0.05));
        assert_eq!(h.samples[3].label("le"), Some("+Inf"));
        let c = &families[1];
        assert_eq!(
            (c.kind, c.samples[0].suffix.as_str(), c.samples[0].value),
            (Kind::Counter, "_total", 3.0)
        );
        assert_eq!((families[2].kind, families[2].samples[0].value), (Kind::Gauge, 1.0));
    }

    #[test]
    fn malformed_lines_are_errors() {
        for bad in ["# TYPE x counter\nx_total{a=\"1} 2", "# TYPE x gauge\nx abc", "y 1"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_error_names_the_line_and_the_problem() {
        let error = parse("# TYPE x gauge\nx abc").unwrap_err();
        assert_eq!((error.line, &error.problem), (2, &Problem::NotANumber("abc".into())));
        assert_eq!(error.to_string(), "line 2: not a number: abc: x abc");
    }

    #[test]
    fn reads_the_registry_it_is_written_for() {
        let metrics = crate::Metrics::new();
        metrics.register_model("m", &["queue_full"]);
        let labels = crate::RequestLabels {
            http_request_method: "GET".into(),
            http_route: "/v1/models".into(),
            http_response_status_code: 200,
        };
        metrics.observe_request(&labels, 0.001, None);
        let text = metrics.encode();
        let families = parse(&text).unwrap();
        assert!(families.iter().any(|f| f.name == crate::names::HTTP_SERVER_REQUEST_DURATION), "{text}");
        let rejections = families.iter().find(|f| f.name == crate::names::SCHEDULER_REJECTIONS).unwrap();
        assert_eq!(rejections.samples[0].label("reason"), Some("queue_full"));
    }
}
