//! Fakes of the DEX data APIs the sources ask: DexScreener
//! (`GET /tokens/v1/{chainId}/{addresses}`) and GeckoTerminal
//! (`GET /api/v2/networks/{network}/tokens/multi/{addresses}`), answering
//! with their public response shapes. Not for production.
//!
//! Values are set by the test per (network, address). DexScreener's answer
//! lists two pairs a token: the real one, deep, and a shallow decoy with
//! another value (the client must take the most liquid); and a pair that
//! trades the token as its quote (the client must skip it).
//!
//! Each fake keeps its per-minute limit on a sliding minute, as the real
//! APIs do: a request past it is answered 429 with `Retry-After: 1`, and
//! counted. It counts every request and the addresses it was asked about,
//! and misbehaves on demand: a 5xx, a slow answer, or down (connection
//! refused) until up again.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// Which API a fake plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    DexScreener,
    GeckoTerminal,
}

#[derive(Debug, Default)]
struct State {
    /// (network id as the API names it, lower-case address) → value.
    values: HashMap<(String, String), f64>,
    /// Every request's time, for the sliding minute.
    recent: VecDeque<Instant>,
    limit: usize,
    requests: usize,
    rate_limited: usize,
    /// The most requests any sliding minute held (accepted or not).
    max_in_minute: usize,
    asked: Vec<String>,
    /// The next requests answer this status.
    failures: VecDeque<u16>,
    delay: Duration,
}

/// A running fake; stops when dropped.
#[derive(Debug)]
pub struct FakeDex {
    api: Api,
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for FakeDex {
    fn drop(&mut self) {
        if let Some(server) = self.server.lock().take() {
            server.abort();
        }
    }
}

impl FakeDex {
    /// Starts a fake of `api` on 127.0.0.1 (a free port) that takes at
    /// most `limit_per_minute` requests in any minute.
    pub async fn start(api: Api, limit_per_minute: usize) -> std::io::Result<FakeDex> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            limit: limit_per_minute,
            ..State::default()
        }));
        let server = serve(api, listener, Arc::clone(&state));
        Ok(FakeDex {
            api,
            addr,
            state,
            server: Mutex::new(Some(server)),
        })
    }

    /// The base URL to configure (`sources.dexscreener.url`, …).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `address` on `network` (the API's own id: `solana`, `ethereum` or
    /// `eth`, …) is worth `value`; `None` forgets it.
    pub fn set(&self, network: &str, address: &str, value: Option<f64>) {
        let key = (network.to_owned(), address.to_ascii_lowercase());
        let mut s = self.state.lock();
        match value {
            Some(v) => s.values.insert(key, v),
            None => s.values.remove(&key),
        };
    }

    /// The next `times` requests are answered `status`.
    pub fn fail_next(&self, status: u16, times: usize) {
        self.state
            .lock()
            .failures
            .extend(std::iter::repeat_n(status, times));
    }

    /// Every answer waits `delay` first.
    pub fn slow(&self, delay: Duration) {
        self.state.lock().delay = delay;
    }

    /// Closes the port: requests are refused until [`FakeDex::up`].
    pub async fn down(&self) {
        let server = self.server.lock().take();
        if let Some(server) = server {
            server.abort();
            let _ = server.await;
        }
    }

    /// Listens again, on the same port.
    pub async fn up(&self) -> std::io::Result<()> {
        if self.server.lock().is_some() {
            return Ok(());
        }
        let listener = TcpListener::bind(self.addr).await?;
        *self.server.lock() = Some(serve(self.api, listener, Arc::clone(&self.state)));
        Ok(())
    }

    /// Requests received (answered or refused with 429 or a failure).
    pub fn requests(&self) -> usize {
        self.state.lock().requests
    }

    /// Requests answered 429 for breaking the limit.
    pub fn rate_limited(&self) -> usize {
        self.state.lock().rate_limited
    }

    /// The most requests any sliding minute held.
    pub fn max_in_minute(&self) -> usize {
        self.state.lock().max_in_minute
    }

    /// Every address asked about, in order.
    pub fn asked(&self) -> Vec<String> {
        self.state.lock().asked.clone()
    }
}

fn serve(api: Api, listener: TcpListener, state: Arc<Mutex<State>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let state = Arc::clone(&state);
                    connections.spawn(async move {
                        let service = service_fn(move |req| handle(api, req, Arc::clone(&state)));
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    })
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, body: String) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

async fn handle(
    api: Api,
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
) -> Result<Reply, Infallible> {
    let path = req.uri().path().to_owned();
    let delay = state.lock().delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut s = state.lock();
    s.requests += 1;
    let now = Instant::now();
    while s
        .recent
        .front()
        .is_some_and(|&t| now.duration_since(t) >= Duration::from_secs(60))
    {
        s.recent.pop_front();
    }
    s.recent.push_back(now);
    s.max_in_minute = s.max_in_minute.max(s.recent.len());
    if s.recent.len() > s.limit {
        s.rate_limited += 1;
        let mut r = reply(
            StatusCode::TOO_MANY_REQUESTS,
            json!({"error": "rate limit"}).to_string(),
        );
        r.headers_mut().insert(
            hyper::header::RETRY_AFTER,
            hyper::header::HeaderValue::from_static("1"),
        );
        return Ok(r);
    }
    if let Some(status) = s.failures.pop_front() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        return Ok(reply(status, json!({"error": "failing"}).to_string()));
    }
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let (network, list) = match (api, parts.as_slice()) {
        (Api::DexScreener, ["tokens", "v1", network, list]) => (*network, *list),
        (Api::GeckoTerminal, ["api", "v2", "networks", network, "tokens", "multi", list]) => {
            (*network, *list)
        }
        _ => return Ok(reply(StatusCode::NOT_FOUND, "{}".to_owned())),
    };
    let addresses: Vec<&str> = list.split(',').filter(|a| !a.is_empty()).collect();
    if addresses.len() > 30 {
        return Ok(reply(StatusCode::BAD_REQUEST, "{}".to_owned()));
    }
    s.asked.extend(addresses.iter().map(|a| (*a).to_owned()));
    let known: Vec<(&str, f64)> = addresses
        .iter()
        .filter_map(|a| {
            s.values
                .get(&(network.to_owned(), a.to_ascii_lowercase()))
                .map(|&v| (*a, v))
        })
        .collect();
    let body = match api {
        Api::DexScreener => dexscreener_answer(network, &known),
        Api::GeckoTerminal => geckoterminal_answer(network, &known),
    };
    Ok(reply(StatusCode::OK, body.to_string()))
}

fn dexscreener_answer(network: &str, known: &[(&str, f64)]) -> Value {
    let pair = |address: &str, base: &str, quote: &str, liquidity: f64, fdv: f64| {
        json!({
            "chainId": network,
            "dexId": "raydium",
            "url": format!("https://dexscreener.com/{network}/{address}"),
            "pairAddress": address,
            "baseToken": {"address": base, "name": "Token", "symbol": "TKN"},
            "quoteToken": {"address": quote, "name": "Quote", "symbol": "QT"},
            "priceNative": "0.001",
            "priceUsd": "0.1",
            "liquidity": {"usd": liquidity, "base": 1000, "quote": 10},
            "fdv": fdv,
            "marketCap": fdv * 0.9,
        })
    };
    let mut pairs = Vec::new();
    for &(address, value) in known {
        pairs.push(pair("PairDeep", address, "QuoteMint", 250_000.0, value));
        pairs.push(pair(
            "PairShallow",
            address,
            "QuoteMint",
            900.0,
            value * 3.0,
        ));
        pairs.push(pair("PairAsQuote", "OtherMint", address, 1e9, 1.0));
    }
    Value::Array(pairs)
}

fn geckoterminal_answer(network: &str, known: &[(&str, f64)]) -> Value {
    let data: Vec<Value> = known
        .iter()
        .map(|&(address, value)| {
            json!({
                "id": format!("{network}_{address}"),
                "type": "token",
                "attributes": {
                    "address": address,
                    "name": "Token",
                    "symbol": "TKN",
                    "decimals": 6,
                    "price_usd": "0.1",
                    "fdv_usd": value.to_string(),
                    "market_cap_usd": null,
                    "total_reserve_in_usd": "250000",
                },
            })
        })
        .collect();
    json!({"data": data})
}
