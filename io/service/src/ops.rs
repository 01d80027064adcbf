//! Operations endpoints: `/metrics` in the OpenMetrics text format,
//! `/healthz` (the process is alive and serving) and `/readyz` (its
//! dependencies answer), and beside them, when it is set up, the web
//! dashboard's pages (`callwatch_dashboard`). One small HTTP/1 server (axum);
//! what it reports comes from the caller, gathered at each request.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get as route_get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The `/metrics` exposition, built one family at a time and written in
/// the OpenMetrics text format by prometheus-client. Counters and gauges
/// are read from the service's atomics at each scrape; histograms are
/// prometheus-client's own, observed where things happen.
#[derive(Debug, Default)]
pub struct Exposition {
    families: Vec<Family>,
}

/// One sample's labels, as (name, value) pairs.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

#[derive(Debug)]
struct Family {
    /// The family's name: a counter's without its `_total`, which the
    /// encoder puts on each sample.
    name: String,
    help: String,
    values: Values,
}

#[derive(Debug)]
enum Values {
    Counter(Vec<(Vec<(String, String)>, f64)>),
    Gauge(Vec<(Vec<(String, String)>, f64)>),
    Histogram(Histogram),
}

/// A latency histogram in seconds, with the service's latency buckets.
pub fn latency_histogram() -> Histogram {
    Histogram::new(callwatch_common::buckets::latency())
}

fn owned(samples: &[(Labels<'_>, f64)]) -> Vec<(Vec<(String, String)>, f64)> {
    samples
        .iter()
        .map(|(labels, v)| {
            let labels = labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), escaped(v)))
                .collect();
            (labels, *v)
        })
        .collect()
}

/// A label value as the text format needs it: prometheus-client writes
/// label values as given.
fn escaped(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes one sample: a whole number as an integer (as Prometheus's own
/// clients do), anything else as a float.
fn encode_value(kind: MetricType, v: f64, to: MetricEncoder<'_>) -> std::fmt::Result {
    let whole = v.fract() == 0.0 && v.abs() < 9e15;
    match (kind, whole) {
        (MetricType::Counter, true) if v >= 0.0 => ConstCounter::new(v as u64).encode(to),
        (MetricType::Counter, _) => ConstCounter::new(v).encode(to),
        (_, true) => ConstGauge::new(v as i64).encode(to),
        _ => ConstGauge::new(v).encode(to),
    }
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        for f in &self.families {
            let (kind, samples) = match &f.values {
                Values::Histogram(h) => {
                    let to = encoder.encode_descriptor(&f.name, &f.help, None, h.metric_type())?;
                    h.encode(to)?;
                    continue;
                }
                Values::Counter(samples) => (MetricType::Counter, samples),
                Values::Gauge(samples) => (MetricType::Gauge, samples),
            };
            let mut family = encoder.encode_descriptor(&f.name, &f.help, None, kind)?;
            match samples.as_slice() {
                [(labels, v)] if labels.is_empty() => encode_value(kind, *v, family)?,
                samples => {
                    for (labels, v) in samples {
                        encode_value(kind, *v, family.encode_family(labels)?)?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    /// A counter family with one sample per label set; `name` ends in
    /// `_total`, as each sample's name does.
    pub fn counter(&mut self, name: &str, help: &str, samples: &[(Labels<'_>, f64)]) -> &mut Self {
        debug_assert!(name.ends_with("_total"), "{name}");
        self.families.push(Family {
            name: name.strip_suffix("_total").unwrap_or(name).to_owned(),
            help: help.to_owned(),
            values: Values::Counter(owned(samples)),
        });
        self
    }

    /// A gauge family with one sample per label set.
    pub fn gauge(&mut self, name: &str, help: &str, samples: &[(Labels<'_>, f64)]) -> &mut Self {
        self.families.push(Family {
            name: name.to_owned(),
            help: help.to_owned(),
            values: Values::Gauge(owned(samples)),
        });
        self
    }

    /// A histogram family: `_bucket`, `_sum` and `_count` samples.
    pub fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) -> &mut Self {
        self.families.push(Family {
            name: name.to_owned(),
            help: help.to_owned(),
            values: Values::Histogram(histogram.clone()),
        });
        self
    }

    /// The exposition, `# EOF` included.
    pub fn finish(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)
            .expect("writing to a String does not fail");
        text
    }
}

/// Whether the service can do its work, with a reason per dependency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    /// One line per dependency, e.g. `redis ok 0.4 ms`.
    pub detail: Vec<String>,
}

/// What the endpoints report; called at each request.
pub trait Report: Send + Sync + 'static {
    fn metrics(&self) -> String;
    fn readiness(&self) -> Readiness;
}

/// What `/metrics` answers with.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn text(status: StatusCode, body: String) -> Response {
    typed(status, body, "text/plain; charset=utf-8")
}

fn typed(status: StatusCode, body: String, content_type: &'static str) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

type Shared = State<Arc<dyn Report>>;

async fn metrics(State(report): Shared) -> Response {
    typed(StatusCode::OK, report.metrics(), OPENMETRICS)
}

async fn healthz() -> Response {
    text(StatusCode::OK, "ok\n".to_owned())
}

async fn readyz(State(report): Shared) -> Response {
    let r = report.readiness();
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    text(status, r.detail.join("\n") + "\n")
}

async fn not_found() -> Response {
    text(
        StatusCode::NOT_FOUND,
        "not found: try /metrics, /healthz or /readyz\n".to_owned(),
    )
}

/// One plain GET of an endpoint at `addr` (`host:port`), as a load test or
/// an operator's script asks: the status code and the body. Blocking, with
/// a 5 s limit on each read.
pub fn get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (head, body) = out
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP header"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status"))?;
    Ok((status, body.to_owned()))
}

/// Quantiles of a histogram family in a `/metrics` exposition, estimated
/// from its cumulative buckets as Prometheus's `histogram_quantile` does:
/// linearly within the bucket the rank falls in (from 0 for the first), and
/// the highest finite bound for a rank beyond it. `None` for a quantile of
/// a histogram with no observations, or one the text does not hold.
pub fn histogram_quantiles(text: &str, family: &str, quantiles: &[f64]) -> Vec<Option<f64>> {
    let prefix = format!("{family}_bucket{{le=\"");
    let buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|l| {
            let (le, count) = l.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect();
    let total = buckets.last().map_or(0.0, |&(_, c)| c);
    quantiles
        .iter()
        .map(|&q| {
            if total == 0.0 {
                return None;
            }
            let rank = q * total;
            let at = buckets.iter().position(|&(_, c)| c >= rank)?;
            let (le, count) = buckets[at];
            let (lower, below) = if at == 0 { (0.0, 0.0) } else { buckets[at - 1] };
            if le.is_infinite() {
                return Some(lower);
            }
            if count == below {
                return Some(le);
            }
            Some(lower + (le - lower) * (rank - below) / (count - below))
        })
        .collect()
}

/// Binds `listen` and returns the bound address (port 0 picks one).
pub async fn bind(listen: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// Serves the endpoints, and `pages` beside them (an empty router when
/// the dashboard is off), until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    report: Arc<dyn Report>,
    pages: axum::Router,
    mut stop: watch::Receiver<bool>,
) {
    let app = axum::Router::new()
        .route("/metrics", route_get(metrics))
        .route("/healthz", route_get(healthz))
        .route("/readyz", route_get(readyz))
        .fallback(not_found)
        .with_state(report)
        .merge(pages);
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stopped)
        .await
    {
        tracing::warn!(error = %e, "the metrics server stopped with an error");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    struct Fixed(AtomicBool);

    impl Report for Fixed {
        fn metrics(&self) -> String {
            let mut e = Exposition::new();
            e.gauge("callwatch_up", "Up.", &[(&[], 1.0)]);
            e.finish()
        }
        fn readiness(&self) -> Readiness {
            let ready = self.0.load(Ordering::Relaxed);
            Readiness {
                ready,
                detail: vec![format!("redis {}", if ready { "ok" } else { "down" })],
            }
        }
    }

    async fn fetch(addr: SocketAddr, path: &'static str) -> (u16, String) {
        tokio::task::spawn_blocking(move || get(&addr.to_string(), path).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn endpoints_answer_and_stop() {
        let (listener, addr) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let report = Arc::new(Fixed(AtomicBool::new(false)));
        let (stop_tx, stop) = watch::channel(false);
        let server = tokio::spawn(serve(listener, report.clone(), axum::Router::new(), stop));
        let (status, metrics) = fetch(addr, "/metrics").await;
        assert_eq!(status, 200, "{metrics}");
        assert!(metrics.ends_with("callwatch_up 1\n# EOF\n"), "{metrics}");
        assert_eq!(fetch(addr, "/healthz").await.0, 200);
        let (status, not_ready) = fetch(addr, "/readyz").await;
        assert!(
            status == 503 && not_ready.contains("redis down"),
            "{not_ready}"
        );
        report.0.store(true, Ordering::Relaxed);
        assert_eq!(fetch(addr, "/readyz").await.0, 200);
        assert_eq!(fetch(addr, "/nope").await.0, 404);
        stop_tx.send(true).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), server)
            .await
            .expect("stops")
            .unwrap();
    }

    #[test]
    fn exposition_is_openmetrics_text() {
        let latency = latency_histogram();
        latency.observe(0.0005);
        latency.observe(0.004);
        latency.observe(120.0);
        let mut e = Exposition::new();
        e.counter(
            "callwatch_alerts_total",
            "Alerts decided.",
            &[(&[("kind", "call")], 3.0), (&[("kind", "multiplier")], 4.0)],
        )
        .gauge(
            "callwatch_inbox_depth",
            "Batches waiting.",
            &[(&[("shard", "0")], 1.0)],
        )
        .gauge("callwatch_up", "Up.", &[(&[], 1.0)])
        .gauge("callwatch_odd", "Escaping.", &[(&[("v", "a\"b\\c")], 0.5)])
        .histogram("callwatch_latency_seconds", "Latency.", &latency);
        let text = e.finish();
        let (head, buckets) = text.split_at(text.find("callwatch_latency_seconds_sum").unwrap());
        assert_eq!(
            head,
            "# HELP callwatch_alerts Alerts decided.\n\
             # TYPE callwatch_alerts counter\n\
             callwatch_alerts_total{kind=\"call\"} 3\n\
             callwatch_alerts_total{kind=\"multiplier\"} 4\n\
             # HELP callwatch_inbox_depth Batches waiting.\n\
             # TYPE callwatch_inbox_depth gauge\n\
             callwatch_inbox_depth{shard=\"0\"} 1\n\
             # HELP callwatch_up Up.\n\
             # TYPE callwatch_up gauge\n\
             callwatch_up 1\n\
             # HELP callwatch_odd Escaping.\n\
             # TYPE callwatch_odd gauge\n\
             callwatch_odd{v=\"a\\\"b\\\\c\"} 0.5\n\
             # HELP callwatch_latency_seconds Latency.\n\
             # TYPE callwatch_latency_seconds histogram\n"
        );
        let lines: Vec<&str> = buckets.lines().collect();
        assert_eq!(
            lines[..2],
            [
                "callwatch_latency_seconds_sum 120.0045",
                "callwatch_latency_seconds_count 3"
            ]
        );
        // Cumulative: the first bucket (1 ms) holds the 0.5 ms, the 4 ms
        // joins a few buckets on, 120 s only +Inf.
        assert_eq!(lines[2], "callwatch_latency_seconds_bucket{le=\"0.001\"} 1");
        assert_eq!(
            lines[lines.len() - 3],
            "callwatch_latency_seconds_bucket{le=\"60.0\"} 2"
        );
        assert_eq!(
            lines[lines.len() - 2],
            "callwatch_latency_seconds_bucket{le=\"+Inf\"} 3"
        );
        assert_eq!(lines[lines.len() - 1], "# EOF");
        assert_eq!(lines.len(), 2 + 40 + 1 + 1);
    }

    #[test]
    fn quantiles_come_from_the_buckets_as_prometheus_estimates_them() {
        let h = Histogram::new([1.0, 2.0, 4.0]);
        for v in [0.5, 1.5, 1.5, 3.0, 10.0] {
            h.observe(v);
        }
        let mut e = Exposition::new();
        e.histogram("x_seconds", "X.", &h);
        let text = e.finish();
        let q = histogram_quantiles(&text, "x_seconds", &[0.2, 0.5, 0.7, 0.99]);
        // Ranks 1, 2.5, 3.5, 4.95 of 5: in (0,1] whole; in (1,2] 1.5 of its
        // 2; in (2,4] 0.5 of its 1; beyond the last bound.
        assert_eq!(q, [Some(1.0), Some(1.75), Some(3.0), Some(4.0)]);
        assert_eq!(histogram_quantiles(&text, "y_seconds", &[0.5]), [None]);
        let empty = Histogram::new([1.0]);
        let mut e = Exposition::new();
        e.histogram("x_seconds", "X.", &empty);
        assert_eq!(
            histogram_quantiles(&e.finish(), "x_seconds", &[0.5]),
            [None]
        );
    }
}
