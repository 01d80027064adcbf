//! Operations endpoints: `/metrics` in Prometheus's text format,
//! `/healthz` (the process is alive and serving) and `/readyz` (its
//! dependencies answer). One small HTTP/1 server; what it reports comes
//! from the caller, gathered at each request.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Prometheus text exposition, built one family at a time.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

/// One sample's labels, as (name, value) pairs.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    fn head(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: Labels<'_>, value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.text, "{k}=\"{v}\"");
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// A counter family with one sample per label set.
    pub fn counter(&mut self, name: &str, help: &str, samples: &[(Labels<'_>, f64)]) -> &mut Self {
        self.head(name, help, "counter");
        for (labels, v) in samples {
            self.sample(name, labels, *v);
        }
        self
    }

    /// A gauge family with one sample per label set.
    pub fn gauge(&mut self, name: &str, help: &str, samples: &[(Labels<'_>, f64)]) -> &mut Self {
        self.head(name, help, "gauge");
        for (labels, v) in samples {
            self.sample(name, labels, *v);
        }
        self
    }

    pub fn finish(self) -> String {
        self.text
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

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

fn route(report: &dyn Report, path: &str) -> Response<Full<Bytes>> {
    match path {
        "/metrics" => text(StatusCode::OK, report.metrics()),
        "/healthz" => text(StatusCode::OK, "ok\n".to_owned()),
        "/readyz" => {
            let r = report.readiness();
            let status = if r.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(status, r.detail.join("\n") + "\n")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n".to_owned(),
        ),
    }
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

/// Binds `listen` and returns the bound address (port 0 picks one).
pub async fn bind(listen: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// Serves the endpoints until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    report: Arc<dyn Report>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let report = Arc::clone(&report);
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let report = Arc::clone(&report);
                async move { Ok::<_, Infallible>(route(report.as_ref(), req.uri().path())) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "metrics connection ended with an error");
            }
        });
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
        let server = tokio::spawn(serve(listener, report.clone(), stop));
        let (status, metrics) = fetch(addr, "/metrics").await;
        assert_eq!(status, 200, "{metrics}");
        assert!(metrics.ends_with("callwatch_up 1\n"), "{metrics}");
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
    fn exposition_is_prometheus_text() {
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
        .gauge("callwatch_odd", "Escaping.", &[(&[("v", "a\"b\\c")], 0.5)]);
        assert_eq!(
            e.finish(),
            "# HELP callwatch_alerts_total Alerts decided.\n\
             # TYPE callwatch_alerts_total counter\n\
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
             callwatch_odd{v=\"a\\\"b\\\\c\"} 0.5\n"
        );
    }
}
