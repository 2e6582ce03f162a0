//! Self-contained HTML reports with inline SVG plots (no script, no external files): a run's
//! percentiles, throughput and the gateway's queue over time; a capacity search's latency
//! against throughput and goodput against offered load. The JSON result is embedded too.

use std::fmt::Write as _;

use crate::capacity::CapacityReport;
use crate::report::Report;

/// One line of a chart.
pub struct Series<'a> {
    pub name: &'a str,
    pub colour: &'a str,
    pub points: Vec<(f64, f64)>,
}

/// Colours of the series, in order (distinct in print and for colour-blind readers).
pub const PALETTE: [&str; 5] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd"];

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 300.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 48.0;

/// Escape text for HTML and SVG.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A round step giving about `n` ticks over `span`.
fn tick_step(span: f64, n: f64) -> f64 {
    let raw = (span / n).max(f64::MIN_POSITIVE);
    let magnitude = 10f64.powf(raw.log10().floor());
    let unit = [1.0, 2.0, 5.0, 10.0].into_iter().find(|u| u * magnitude >= raw).unwrap_or(10.0);
    unit * magnitude
}

fn label(v: f64) -> String {
    if v == 0.0 || v.abs() >= 10.0 || (v.abs() >= 0.1 && v.fract().abs() < 1e-9) {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}").trim_end_matches('0').to_owned()
    }
}

/// A line chart with axes from zero, ticks, grid and a legend; each series a polyline with
/// a marker at every point. A chart with no points says so instead.
pub fn chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let points = series.iter().flat_map(|s| s.points.iter()).filter(|(x, y)| x.is_finite() && y.is_finite());
    let (x_max, y_max) = points.fold((0.0f64, 0.0f64), |(xm, ym), (x, y)| (xm.max(*x), ym.max(*y)));
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{t}">"#,
        t = escape(title)
    );
    let _ = write!(svg, r#"<text x="{LEFT}" y="20" class="title">{}</text>"#, escape(title));
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    if series.iter().all(|s| s.points.is_empty()) {
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" class="empty">no data</text></svg>"#,
            WIDTH / 2.0,
            HEIGHT / 2.0
        );
        return svg;
    }
    let (x_step, y_step) = (tick_step(x_max.max(1e-9), 6.0), tick_step(y_max.max(1e-9), 5.0));
    let (x_top, y_top) =
        ((x_max / x_step).ceil().max(1.0) * x_step, (y_max / y_step).ceil().max(1.0) * y_step);
    let x_at = |x: f64| LEFT + x / x_top * plot_w;
    let y_at = |y: f64| TOP + plot_h - y / y_top * plot_h;
    let mut tick = 0.0;
    while tick <= y_top + y_step / 2.0 {
        let y = y_at(tick);
        let _ = write!(
            svg,
            r#"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" class="grid"/><text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">{}</text>"#,
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0,
            label(tick)
        );
        tick += y_step;
    }
    tick = 0.0;
    while tick <= x_top + x_step / 2.0 {
        let x = x_at(tick);
        let _ = write!(
            svg,
            r#"<text x="{x:.1}" y="{:.1}" class="tick" text-anchor="middle">{}</text>"#,
            TOP + plot_h + 16.0,
            label(tick)
        );
        tick += x_step;
    }
    let _ = write!(
        svg,
        r#"<line x1="{LEFT}" y1="{b:.1}" x2="{r:.1}" y2="{b:.1}" class="axis"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{b:.1}" class="axis"/>"#,
        b = TOP + plot_h,
        r = LEFT + plot_w
    );
    let _ = write!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" class="label" text-anchor="middle">{}</text><text x="14" y="{:.1}" class="label" text-anchor="middle" transform="rotate(-90 14 {:.1})">{}</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 8.0,
        escape(x_label),
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        escape(y_label)
    );
    let mut legend_x = LEFT + plot_w;
    for s in series.iter().rev() {
        legend_x -= 14.0 + 7.0 * s.name.chars().count() as f64 + 18.0;
        let _ = write!(
            svg,
            r#"<rect x="{legend_x:.1}" y="10" width="12" height="12" fill="{c}"/><text x="{:.1}" y="20" class="legend">{}</text>"#,
            legend_x + 16.0,
            escape(s.name),
            c = s.colour
        );
    }
    for s in series {
        let finite: Vec<(f64, f64)> =
            s.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
        let path: Vec<String> =
            finite.iter().map(|(x, y)| format!("{:.1},{:.1}", x_at(*x), y_at(*y))).collect();
        let _ = write!(
            svg,
            r#"<polyline class="series" data-series="{}" points="{}" fill="none" stroke="{c}" stroke-width="2.5"/>"#,
            escape(s.name),
            path.join(" "),
            c = s.colour
        );
        for (x, y) in &finite {
            let _ = write!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"/>"#,
                x_at(*x),
                y_at(*y),
                c = s.colour
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

const STYLE: &str = "body{font-family:'DejaVu Sans',sans-serif;margin:24px;color:#222;background:#fff}\
h1{font-size:20px}h2{font-size:16px;margin-top:28px}\
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}\
th:first-child,td:first-child{text-align:left}.bad{color:#b00}\
svg.chart{display:block;margin:8px 0 20px;border:1px solid #ddd}\
.title{font-size:14px;font-weight:bold}.tick,.legend{font-size:11px}.label{font-size:12px}\
.grid{stroke:#eee}.axis{stroke:#444}.empty{font-size:14px;fill:#888}";

fn page(title: &str, body: &str, json: &str) -> String {
    // `</` cannot end the script element early once escaped.
    let json = json.replace("</", "<\\/");
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><style>{STYLE}</style></head>\n<body><h1>{t}</h1>\n{body}\n<script type=\"application/json\" id=\"result\">{json}</script></body></html>\n",
        t = escape(title)
    )
}

fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut html = String::from("<table><tr>");
    header.iter().for_each(|h| {
        let _ = write!(html, "<th>{}</th>", escape(h));
    });
    html.push_str("</tr>");
    for row in rows {
        html.push_str("<tr>");
        row.iter().for_each(|cell| {
            let _ = write!(html, "<td>{}</td>", escape(cell));
        });
        html.push_str("</tr>");
    }
    html.push_str("</table>");
    html
}

fn ms(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{v:.3}"))
}

/// A run's report: settings, statistics and plots over time.
pub fn run_report(report: &Report) -> String {
    let (p, s) = (&report.params, &report.summary);
    let mut body = String::new();
    let mode = match (&s.schedule, p.mode.as_ref()) {
        (Some(schedule), mode) => format!(
            "{mode}, offered {:.1} req/s, {}",
            schedule.offered_per_s,
            if schedule.valid {
                "valid".to_owned()
            } else {
                format!("INVALID: {}", schedule.invalid_because.join("; "))
            }
        ),
        (None, mode) => format!("{mode}, concurrency {}", p.concurrency),
    };
    let _ = write!(body, "<p>{} {} — {}</p>", escape(&p.method), escape(&p.url), escape(&mode));
    let mut rows = vec![
        vec!["requests".into(), s.requests.to_string()],
        vec!["duration (s)".into(), format!("{:.3}", s.duration_s)],
        vec!["throughput (req/s)".into(), format!("{:.1}", s.requests_per_s)],
        vec!["successes (2xx)".into(), s.successes.to_string()],
        vec!["errors".into(), s.errors.to_string()],
    ];
    rows.extend(
        s.errors_by_status.iter().map(|(status, n)| vec![format!("errors: status {status}"), n.to_string()]),
    );
    rows.extend(
        s.errors_by_kind
            .iter()
            .map(|(kind, n)| vec![format!("errors: {kind:?}").to_lowercase(), n.to_string()]),
    );
    if s.output_tokens > 0 {
        rows.push(vec!["output tokens".into(), s.output_tokens.to_string()]);
    }
    body.push_str(&table(&["", ""], &rows));
    let metrics = [
        ("latency", &s.latency_ms),
        ("TTFT", &s.ttft_ms),
        ("inter-token", &s.itl_ms),
        ("per output token", &s.tpot_ms),
        ("queue wait", &s.queue_ms),
    ];
    let rows: Vec<Vec<String>> = metrics
        .iter()
        .filter_map(|(name, l)| {
            l.as_ref().map(|l| {
                vec![
                    name.to_string(),
                    ms(Some(l.p50)),
                    ms(Some(l.p90)),
                    ms(Some(l.p99)),
                    ms(Some(l.p999)),
                    ms(Some(l.max)),
                ]
            })
        })
        .collect();
    body.push_str("<h2>Latency (ms, 2xx responses)</h2>");
    body.push_str(&table(&["", "p50", "p90", "p99", "p99.9", "max"], &rows));
    if !s.scenarios.is_empty() {
        let rows: Vec<Vec<String>> = s
            .scenarios
            .iter()
            .map(|(name, x)| {
                let p = |l: &Option<crate::report::Latency>, f: fn(&crate::report::Latency) -> f64| {
                    ms(l.as_ref().map(f))
                };
                vec![
                    name.clone(),
                    x.requests.to_string(),
                    x.successes.to_string(),
                    p(&x.latency_ms, |l| l.p50),
                    p(&x.latency_ms, |l| l.p99),
                    p(&x.ttft_ms, |l| l.p99),
                    p(&x.queue_ms, |l| l.p99),
                ]
            })
            .collect();
        body.push_str("<h2>By scenario entry</h2>");
        body.push_str(&table(&["entry", "requests", "2xx", "p50", "p99", "TTFT p99", "queue p99"], &rows));
    }

    let over_time = |f: fn(&crate::report::Moment) -> Option<f64>| -> Vec<(f64, f64)> {
        s.timeline.iter().filter_map(|m| f(m).map(|v| (m.t_s as f64, v))).collect()
    };
    let mut percentiles = vec![
        Series { name: "p50", colour: PALETTE[0], points: over_time(|m| m.p50_ms) },
        Series { name: "p99", colour: PALETTE[1], points: over_time(|m| m.p99_ms) },
    ];
    if s.ttft_ms.is_some() {
        percentiles.push(Series {
            name: "TTFT p99",
            colour: PALETTE[2],
            points: over_time(|m| m.ttft_p99_ms),
        });
    }
    body.push_str("<h2>Over time</h2>");
    body.push_str(&chart("Latency percentiles over time", "seconds (by send time)", "ms", &percentiles));
    let throughput = [
        Series { name: "2xx/s", colour: PALETTE[0], points: over_time(|m| Some(m.successes as f64)) },
        Series {
            name: "errors/s",
            colour: PALETTE[1],
            points: over_time(|m| Some((m.requests - m.successes) as f64)),
        },
    ];
    body.push_str(&chart(
        "Throughput over time",
        "seconds (by send time)",
        "requests per second",
        &throughput,
    ));
    if !s.scraped.is_empty() {
        let names: std::collections::BTreeSet<&String> =
            s.scraped.iter().flat_map(|x| x.values.keys()).collect();
        let series: Vec<Series> = names
            .iter()
            .zip(PALETTE.iter().cycle())
            .map(|(name, colour)| Series {
                name: name.trim_start_matches("infergate_"),
                colour,
                points: s
                    .scraped
                    .iter()
                    .filter(|x| x.t_s >= 0.0)
                    .filter_map(|x| x.values.get(*name).map(|v| (x.t_s, *v)))
                    .collect(),
            })
            .collect();
        body.push_str(&chart("Gateway queue (scraped /metrics)", "seconds", "jobs", &series));
    }
    page("infergate-load run", &body, &serde_json::to_string(report).unwrap_or_default())
}

/// A capacity search's report: the SLO, the steps and the curves they trace.
pub fn capacity_report(report: &CapacityReport) -> String {
    let slo = &report.slo;
    let mut body = String::new();
    let _ = write!(
        body,
        "<p>{} — SLO: p{} {} ≤ {} ms, goodput ≥ {}, completed ≥ {} of offered</p>",
        escape(&report.url),
        slo.quantile * 100.0,
        slo.metric.name(),
        slo.latency_ms,
        slo.min_goodput,
        slo.min_throughput
    );
    let verdict = match (report.capacity, report.ci95) {
        (Some(c), Some((lo, hi))) => format!("capacity {c:.1} req/s (95% CI {lo:.1}–{hi:.1})"),
        (Some(c), None) => format!("capacity {c:.1} req/s"),
        (None, _) => "no rate met the SLO".into(),
    };
    let _ = write!(body, "<p><b>{}</b></p>", escape(&verdict));
    let steps = || report.searches.iter().flat_map(|s| s.steps.iter());
    let mut by_rate: Vec<&crate::capacity::Step> = steps().collect();
    by_rate.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    let latency = [
        Series {
            name: "SLO quantile",
            colour: PALETTE[1],
            points: by_rate.iter().filter_map(|s| s.slo_latency_ms.map(|l| (s.achieved_per_s, l))).collect(),
        },
        Series {
            name: "p50",
            colour: PALETTE[0],
            points: by_rate
                .iter()
                .filter_map(|s| s.latency_ms.as_ref().map(|l| (s.achieved_per_s, l.p50)))
                .collect(),
        },
        Series { name: "SLO", colour: "#888888", points: slo_line(&by_rate, slo.latency_ms) },
    ];
    body.push_str(&chart("Latency vs. throughput", "completed requests per second", "ms", &latency));
    let goodput = [
        Series {
            name: "goodput",
            colour: PALETTE[2],
            points: by_rate.iter().map(|s| (s.offered_per_s.max(s.rate), s.goodput)).collect(),
        },
        Series { name: "minimum", colour: "#888888", points: slo_line(&by_rate, slo.min_goodput) },
    ];
    body.push_str(&chart(
        "Goodput vs. offered load",
        "offered requests per second",
        "share within the SLO",
        &goodput,
    ));
    for (i, search) in report.searches.iter().enumerate() {
        let _ = write!(body, "<h2>Search {}</h2>", i + 1);
        let rows: Vec<Vec<String>> = search
            .steps
            .iter()
            .enumerate()
            .map(|(n, step)| {
                vec![
                    (n + 1).to_string(),
                    format!("{:.1}", step.rate),
                    format!("{:.1}", step.achieved_per_s),
                    ms(step.latency_ms.as_ref().map(|l| l.p50)),
                    ms(step.slo_latency_ms),
                    format!("{:.4}", step.goodput),
                    if step.passed { "pass".into() } else { format!("fail: {}", step.because.join("; ")) },
                ]
            })
            .collect();
        body.push_str(&table(
            &["step", "rate", "achieved", "p50 ms", "SLO latency ms", "goodput", "verdict"],
            &rows,
        ));
    }
    page("infergate-load capacity", &body, &serde_json::to_string(report).unwrap_or_default())
}

/// A horizontal line at `y` across the steps' offered rates.
fn slo_line(steps: &[&crate::capacity::Step], y: f64) -> Vec<(f64, f64)> {
    let top = steps.iter().map(|s| s.offered_per_s.max(s.rate).max(s.achieved_per_s)).fold(0.0, f64::max);
    vec![(0.0, y), (top, y)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_draws_each_series_inside_its_axes() {
        let svg = chart(
            "t <&>",
            "x",
            "y",
            &[
                Series { name: "a", colour: PALETTE[0], points: vec![(0.0, 0.0), (10.0, 5.0)] },
                Series { name: "b", colour: PALETTE[1], points: vec![(5.0, f64::NAN), (5.0, 2.0)] },
            ],
        );
        assert!(svg.contains("t &lt;&amp;&gt;"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 3, "the NaN point is left out");
        // Every coordinate is inside the plot area.
        for part in svg.split("points=\"").skip(1) {
            for pair in part.split('"').next().unwrap_or_default().split_whitespace() {
                let (x, y) = pair.split_once(',').unwrap_or_default();
                let (x, y): (f64, f64) = (x.parse().unwrap_or(-1.0), y.parse().unwrap_or(-1.0));
                assert!(
                    (LEFT..=WIDTH - RIGHT).contains(&x) && (TOP..=HEIGHT - BOTTOM).contains(&y),
                    "{pair}"
                );
            }
        }
        assert!(
            chart("e", "x", "y", &[Series { name: "a", colour: "#000", points: vec![] }]).contains("no data")
        );
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_step(100.0, 5.0), 20.0);
        assert_eq!(tick_step(7.0, 6.0), 2.0);
        assert_eq!(tick_step(0.3, 5.0), 0.1);
        assert_eq!((label(0.25), label(2.5), label(40.0)), ("0.25".into(), "2.5".into(), "40".into()));
    }
}
