//! A fake Solana JSON-RPC server: a test double for the payment watcher.
//! Not for production.
//!
//! An HTTP/1.1 server on `127.0.0.1:0` that holds a ledger of transfers
//! built in the test ([`transfer`]) and answers `getSignaturesForAddress`
//! and `getTransaction` with the real API's shapes: signatures newest
//! first, honouring `before`, `until`, `limit` and the commitment (a
//! transfer not yet finalized is listed at `confirmed` but not at
//! `finalized`, and `getTransaction` at `finalized` answers `null` for it).
//! A transfer added with `finalized(false)` stays so for ever unless
//! [`FakeRpc::finalize`] is called: a transaction on a dropped fork. The
//! chain's tip, which `getSlot` answers (at any commitment), is the newest
//! transfer's slot, moved on by [`FakeRpc::advance_slots`].
//!
//! It misbehaves on demand: [`FakeRpc::down`] closes the port (connection
//! refused) until [`FakeRpc::up`]; [`FakeRpc::fail_next`] answers the next
//! requests with 429 (with or without `Retry-After`) or a 5xx. It counts
//! every request it receives.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// Lamports in one SOL.
const LAMPORTS_PER_SOL: u64 = 1_000_000_000;

/// The system program, which a plain transfer calls.
const SYSTEM_PROGRAM: &str = "11111111111111111111111111111111";
/// What every fake transaction pays (one signature).
pub const FEE_LAMPORTS: u64 = 5_000;
/// The first fake transaction's slot; each next one is one later.
const FIRST_SLOT: u64 = 300_000_000;

/// A public key for tests, different for each `seed`.
pub fn pubkey(seed: u8) -> String {
    let mut bytes = [seed; 32];
    bytes[0] = 0xC0;
    bs58::encode(bytes).into_string()
}

/// A transfer to put on the fake chain: `lamports` from `from` to `to`.
pub fn transfer(from: &str, to: &str, lamports: u64) -> Transfer {
    Transfer {
        from: from.to_owned(),
        to: to.to_owned(),
        lamports,
        reference: None,
        accounts: Vec::new(),
        block_time: None,
        finalized: true,
        failed: false,
    }
}

/// A transfer being built; see [`transfer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    from: String,
    to: String,
    lamports: u64,
    reference: Option<String>,
    accounts: Vec<String>,
    block_time: Option<i64>,
    finalized: bool,
    failed: bool,
}

impl Transfer {
    /// Names `reference` as a read-only account (Solana Pay).
    pub fn reference(mut self, reference: &str) -> Self {
        self.reference = Some(reference.to_owned());
        self
    }

    /// Names one more read-only account, whose balance does not change.
    pub fn account(mut self, key: &str) -> Self {
        self.accounts.push(key.to_owned());
        self
    }

    /// Lands at `unix_secs` (default: when it is added).
    pub fn block_time(mut self, unix_secs: i64) -> Self {
        self.block_time = Some(unix_secs);
        self
    }

    /// Whether it is finalized yet (default true); see
    /// [`FakeRpc::finalize`].
    pub fn finalized(mut self, finalized: bool) -> Self {
        self.finalized = finalized;
        self
    }

    /// It fails on chain: only the fee moves.
    pub fn failed(mut self) -> Self {
        self.failed = true;
        self
    }
}

/// A transfer on the fake chain.
#[derive(Debug)]
struct Landed {
    signature: String,
    slot: u64,
    transfer: Transfer,
}

impl Landed {
    fn keys(&self) -> Vec<&str> {
        let t = &self.transfer;
        let mut keys = vec![t.from.as_str(), t.to.as_str()];
        keys.extend(t.reference.as_deref());
        keys.extend(t.accounts.iter().map(String::as_str));
        keys.push(SYSTEM_PROGRAM);
        keys
    }

    fn err(&self) -> Value {
        if self.transfer.failed {
            json!({"InstructionError": [0, {"Custom": 1}]})
        } else {
            Value::Null
        }
    }

    fn status(&self) -> &'static str {
        if self.transfer.finalized {
            "finalized"
        } else {
            "confirmed"
        }
    }

    fn signature_info(&self) -> Value {
        json!({
            "signature": self.signature,
            "slot": self.slot,
            "err": self.err(),
            "memo": null,
            "blockTime": self.transfer.block_time,
            "confirmationStatus": self.status(),
        })
    }

    fn transaction(&self) -> Value {
        let t = &self.transfer;
        let keys = self.keys();
        let moved = if t.failed { 0 } else { t.lamports };
        // The payer holds 100 SOL, every other account 1 SOL, before.
        let mut pre = vec![LAMPORTS_PER_SOL; keys.len()];
        pre[0] = 100 * LAMPORTS_PER_SOL;
        let mut post = pre.clone();
        post[0] -= moved + FEE_LAMPORTS;
        post[1] += moved;
        // A system transfer: instruction 2, then the lamports, little-endian.
        let mut data = 2u32.to_le_bytes().to_vec();
        data.extend(t.lamports.to_le_bytes());
        let mut accounts = vec![0, 1];
        accounts.extend(2..keys.len() - 1);
        json!({
            "slot": self.slot,
            "blockTime": t.block_time,
            "version": "legacy",
            "meta": {
                "err": self.err(),
                "status": if t.failed { json!({"Err": self.err()}) } else { json!({"Ok": null}) },
                "fee": FEE_LAMPORTS,
                "preBalances": pre,
                "postBalances": post,
                "innerInstructions": [],
                "logMessages": [],
                "preTokenBalances": [],
                "postTokenBalances": [],
                "rewards": [],
            },
            "transaction": {
                "signatures": [self.signature],
                "message": {
                    "accountKeys": keys,
                    "header": {
                        "numRequiredSignatures": 1,
                        "numReadonlySignedAccounts": 0,
                        "numReadonlyUnsignedAccounts": keys.len() - 2,
                    },
                    "recentBlockhash": pubkey(0xB1),
                    "instructions": [{
                        "programIdIndex": keys.len() - 1,
                        "accounts": accounts,
                        "data": bs58::encode(data).into_string(),
                        "stackHeight": null,
                    }],
                },
            },
        })
    }
}

/// A misbehaviour for the next request(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 429, with a `Retry-After` header if given.
    TooManyRequests { retry_after_secs: Option<u32> },
    /// This status (500, 503, …).
    ServerError(u16),
}

#[derive(Debug, Default)]
struct State {
    chain: Vec<Landed>,
    faults: VecDeque<Fault>,
    requests: usize,
    by_method: HashMap<String, usize>,
    /// Slots the tip has moved on past the newest transfer.
    advanced: u64,
}

impl State {
    /// The newest slot: the newest transfer's, moved on.
    fn tip(&self) -> u64 {
        (FIRST_SLOT + self.chain.len() as u64).saturating_sub(1) + self.advanced
    }
}

/// The running fake. Stops when dropped.
#[derive(Debug)]
pub struct FakeRpc {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for FakeRpc {
    fn drop(&mut self) {
        if let Some(server) = self.server.lock().take() {
            server.abort();
        }
    }
}

impl FakeRpc {
    /// Starts the fake on 127.0.0.1 (a free port), on the current tokio
    /// runtime.
    pub async fn start() -> std::io::Result<FakeRpc> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let server = serve(listener, Arc::clone(&state));
        Ok(FakeRpc {
            addr,
            state,
            server: Mutex::new(Some(server)),
        })
    }

    /// The endpoint to give the watcher (`PaymentsConfig::rpc_url`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Puts `transfer` on the chain, in the next slot; its signature.
    pub fn add(&self, mut transfer: Transfer) -> String {
        let mut state = self.state.lock();
        let n = state.chain.len() as u64;
        let mut bytes = [0x5A; 64];
        bytes[..8].copy_from_slice(&(n + 1).to_be_bytes());
        bytes[8..10].copy_from_slice(&self.addr.port().to_be_bytes());
        let signature = bs58::encode(bytes).into_string();
        if transfer.block_time.is_none() {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            transfer.block_time = i64::try_from(now.as_secs()).ok();
        }
        state.chain.push(Landed {
            signature: signature.clone(),
            slot: FIRST_SLOT + n,
            transfer,
        });
        signature
    }

    /// Moves the chain's tip (`getSlot`) on by `slots`, as time passing.
    pub fn advance_slots(&self, slots: u64) {
        self.state.lock().advanced += slots;
    }

    /// The transfer `signature` is finalized from now on.
    pub fn finalize(&self, signature: &str) {
        let mut state = self.state.lock();
        let landed = state.chain.iter_mut().find(|l| l.signature == signature);
        landed
            .expect("finalize: no such transfer")
            .transfer
            .finalized = true;
    }

    /// Closes the port: requests are refused until [`up`](Self::up).
    pub async fn down(&self) {
        let server = self.server.lock().take();
        if let Some(server) = server {
            server.abort();
            // Aborted: the listener and every connection are closed.
            let _ = server.await;
        }
    }

    /// Listens again, on the same port.
    pub async fn up(&self) -> std::io::Result<()> {
        if self.server.lock().is_some() {
            return Ok(());
        }
        let listener = TcpListener::bind(self.addr).await?;
        *self.server.lock() = Some(serve(listener, Arc::clone(&self.state)));
        Ok(())
    }

    /// The next `times` requests get `fault`.
    pub fn fail_next(&self, fault: Fault, times: usize) {
        self.state
            .lock()
            .faults
            .extend(std::iter::repeat_n(fault, times));
    }

    /// Every request received, answered or refused.
    pub fn requests(&self) -> usize {
        self.state.lock().requests
    }

    /// Requests received for `method`, answered or refused.
    pub fn calls(&self, method: &str) -> usize {
        self.state
            .lock()
            .by_method
            .get(method)
            .copied()
            .unwrap_or(0)
    }
}

fn serve(listener: TcpListener, state: Arc<Mutex<State>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        // Dropped (aborting every connection) with this task.
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let state = Arc::clone(&state);
                    connections.spawn(async move {
                        let service = service_fn(move |req| handle(req, Arc::clone(&state)));
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

fn answer(id: &Value, result: Value) -> Reply {
    reply(
        StatusCode::OK,
        json!({"jsonrpc": "2.0", "result": result, "id": id}).to_string(),
    )
}

fn rpc_error(id: &Value, code: i64, message: &str) -> Reply {
    reply(
        StatusCode::OK,
        json!({"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": id})
            .to_string(),
    )
}

async fn handle(req: Request<Incoming>, state: Arc<Mutex<State>>) -> Result<Reply, Infallible> {
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let request: Value = body
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let method = request["method"].as_str().unwrap_or_default();
    let mut state = state.lock();
    state.requests += 1;
    *state.by_method.entry(method.to_owned()).or_default() += 1;
    if let Some(fault) = state.faults.pop_front() {
        return Ok(refuse(fault));
    }
    let (id, params) = (&request["id"], &request["params"]);
    let commitment = params[1]["commitment"].as_str().unwrap_or("finalized");
    Ok(match method {
        "getSignaturesForAddress" => {
            let Some(address) = params[0].as_str() else {
                return Ok(rpc_error(id, -32602, "Invalid params: address"));
            };
            let limit = params[1]["limit"].as_u64().unwrap_or(1_000);
            if !(1..=1_000).contains(&limit) {
                return Ok(rpc_error(id, -32602, "Invalid limit; max 1000"));
            }
            let listed = signatures(&state.chain, address, &params[1], commitment);
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            answer(id, listed.into_iter().take(limit).collect())
        }
        "getTransaction" => {
            let signature = params[0].as_str().unwrap_or_default();
            let landed = state.chain.iter().find(|l| l.signature == signature);
            let visible = landed.filter(|l| l.transfer.finalized || commitment != "finalized");
            answer(id, visible.map_or(Value::Null, Landed::transaction))
        }
        "getSlot" => answer(id, json!(state.tip())),
        _ => rpc_error(id, -32601, "Method not found"),
    })
}

/// `address`'s signatures, newest first, after `before` and down to
/// `until` (both excluded), at `commitment`.
fn signatures(chain: &[Landed], address: &str, options: &Value, commitment: &str) -> Vec<Value> {
    let before = options["before"].as_str();
    let until = options["until"].as_str();
    let mut newest_first = chain
        .iter()
        .rev()
        .filter(|l| l.keys().contains(&address))
        .filter(|l| l.transfer.finalized || commitment != "finalized");
    if let Some(before) = before {
        // Skip through `before`; none are left if it is unknown.
        for l in newest_first.by_ref() {
            if l.signature == before {
                break;
            }
        }
    }
    newest_first
        .take_while(|l| Some(l.signature.as_str()) != until)
        .map(Landed::signature_info)
        .collect()
}

fn refuse(fault: Fault) -> Reply {
    match fault {
        Fault::TooManyRequests { retry_after_secs } => {
            let mut response = reply(
                StatusCode::TOO_MANY_REQUESTS,
                json!({"jsonrpc": "2.0", "error": {"code": 429, "message": "Too many requests"}})
                    .to_string(),
            );
            if let Some(secs) = retry_after_secs {
                response
                    .headers_mut()
                    .insert(hyper::header::RETRY_AFTER, secs.into());
            }
            response
        }
        Fault::ServerError(status) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            reply(status, String::new())
        }
    }
}
