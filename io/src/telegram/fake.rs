//! A fake Telegram Bot API: a test double for the sender's tests and the
//! load test. Not for production.
//!
//! An HTTP/1.1 server on `127.0.0.1:0` that answers `POST
//! /bot<token>/sendMessage` (and `getMe`) as Telegram does, records every
//! `sendMessage` it receives with its own receive time, and follows a
//! script of misbehaviour: 429 with `retry_after` for one chat or for any,
//! 5xx, slow answers, 403 "bot was blocked by the user".
//!
//! It watches the limits on its own clock: [`FakeBotApi::max_in_window`]
//! is the most requests it received in any window (sliding), overall and
//! per chat. With [`Limits`] it also enforces them, as Telegram would: a
//! message that would put more than the limit in a window is answered 429
//! (`retry_after` 1) and counted.
//!
//! It keeps every request it receives (meant for runs of bounded size).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
use tokio::task::JoinSet;

/// One misbehaviour, for the next request(s) it applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 429 `Too Many Requests: retry after N`, with `retry_after`.
    TooManyRequests { retry_after_secs: u32 },
    /// This status (500, 502, …) with Telegram's error JSON.
    ServerError(u16),
    /// Take the message, but answer only after this long.
    Slow(Duration),
    /// 403 `Forbidden: bot was blocked by the user`.
    Blocked,
}

/// Limits to enforce: more than `per_chat` messages to one chat, or more
/// than `overall` in total, in any `window` is answered 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_chat: usize,
    pub overall: usize,
    pub window: Duration,
}

impl Default for Limits {
    /// Telegram's: 1 per chat and 30 overall per second.
    fn default() -> Self {
        Limits {
            per_chat: 1,
            overall: 30,
            window: Duration::from_secs(1),
        }
    }
}

/// How a request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Taken, with this message id (after `delay`, if it was slow).
    Sent { message_id: i32, delay: Duration },
    /// Refused with this status (429, 5xx, 403).
    Refused { status: u16 },
}

/// One `sendMessage` request as the fake received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// When it arrived, on the fake's clock (since it started).
    pub at: Duration,
    pub chat_id: i64,
    pub text: String,
    pub parse_mode: Option<String>,
    /// The inline keyboard's buttons, (text, url), row after row.
    pub buttons: Vec<(String, String)>,
    pub answer: Answer,
}

/// The most requests the fake received in any one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowMax {
    pub overall: usize,
    /// The most to one chat, and that chat.
    pub per_chat: usize,
    pub chat_id: Option<i64>,
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    for_chat: HashMap<i64, VecDeque<Fault>>,
    for_any: VecDeque<Fault>,
    limits: Option<Limits>,
    /// Times of the messages taken within the last window, for limits.
    taken_all: VecDeque<Instant>,
    taken_chat: HashMap<i64, VecDeque<Instant>>,
    next_message_id: i32,
    too_many: u64,
    enforced: u64,
}

/// The running fake. Stops when dropped.
pub struct FakeBotApi {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FakeBotApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeBotApi")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Drop for FakeBotApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeBotApi {
    /// Starts the fake on 127.0.0.1 (a free port) for a bot with `token`,
    /// on the current tokio runtime.
    pub async fn start(token: &str) -> std::io::Result<FakeBotApi> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            next_message_id: 1,
            ..State::default()
        }));
        let epoch = Instant::now();
        let served = Arc::clone(&state);
        let token: Arc<str> = Arc::from(token);
        let task = tokio::spawn(async move {
            // Dropped (aborting every connection) when the fake is.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let (state, token) = (Arc::clone(&served), Arc::clone(&token));
                        connections.spawn(async move {
                            let service = service_fn(move |req| {
                                handle(req, Arc::clone(&state), Arc::clone(&token), epoch)
                            });
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Ok(FakeBotApi { addr, state, task })
    }

    /// The base URL to give the client (`SenderConfig::api_url`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Enforces `limits` from now on.
    pub fn enforce(&self, limits: Limits) {
        self.state.lock().limits = Some(limits);
    }

    /// The next `times` requests for `chat_id` get `fault`.
    pub fn fail_chat(&self, chat_id: i64, fault: Fault, times: usize) {
        let mut state = self.state.lock();
        let script = state.for_chat.entry(chat_id).or_default();
        script.extend(std::iter::repeat_n(fault, times));
    }

    /// The next `times` requests, for any chat, get `fault` (after those
    /// scripted for their chat).
    pub fn fail_any(&self, fault: Fault, times: usize) {
        self.state
            .lock()
            .for_any
            .extend(std::iter::repeat_n(fault, times));
    }

    /// Every `sendMessage` received so far, in the order received.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().received.clone()
    }

    /// How many `sendMessage` requests it received.
    pub fn count(&self) -> usize {
        self.state.lock().received.len()
    }

    /// 429s answered, scripted or enforced.
    pub fn too_many_requests(&self) -> u64 {
        self.state.lock().too_many
    }

    /// Of those, 429s for going over the enforced limits.
    pub fn over_limit(&self) -> u64 {
        self.state.lock().enforced
    }

    /// The most `sendMessage` requests received in any `window`, over all
    /// chats and to one chat.
    pub fn max_in_window(&self, window: Duration) -> WindowMax {
        let state = self.state.lock();
        let overall = max_in_window(state.received.iter().map(|r| r.at), window);
        let mut by_chat: HashMap<i64, Vec<Duration>> = HashMap::new();
        for r in &state.received {
            by_chat.entry(r.chat_id).or_default().push(r.at);
        }
        let (chat_id, per_chat) = by_chat
            .into_iter()
            .map(|(chat, times)| (chat, max_in_window(times.into_iter(), window)))
            .max_by_key(|&(chat, n)| (n, std::cmp::Reverse(chat)))
            .map_or((None, 0), |(c, n)| (Some(c), n));
        WindowMax {
            overall,
            per_chat,
            chat_id,
        }
    }
}

/// The most of `times` (ascending) that fall in one half-open window
/// `[t, t + window)`.
pub fn max_in_window(times: impl Iterator<Item = Duration>, window: Duration) -> usize {
    let times: Vec<Duration> = times.collect();
    debug_assert!(times.is_sorted());
    let mut best = 0;
    let mut first = 0;
    for (i, &t) in times.iter().enumerate() {
        while t - times[first] >= window {
            first += 1;
        }
        best = best.max(i + 1 - first);
    }
    best
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, body: &Value) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, description: &str) -> Reply {
    reply(
        status,
        &json!({"ok": false, "error_code": status.as_u16(), "description": description}),
    )
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
    token: Arc<str>,
    epoch: Instant,
) -> Result<Reply, Infallible> {
    let path = req.uri().path().to_owned();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(error(
                StatusCode::BAD_REQUEST,
                "Bad Request: unreadable body",
            ));
        }
    };
    let Some((given, method)) = path
        .strip_prefix("/bot")
        .and_then(|rest| rest.split_once('/'))
    else {
        return Ok(error(StatusCode::NOT_FOUND, "Not Found"));
    };
    if given != &*token {
        return Ok(error(StatusCode::UNAUTHORIZED, "Unauthorized"));
    }
    // Telegram's method names are case-insensitive (teloxide sends
    // `SendMessage`).
    match method.to_ascii_lowercase().as_str() {
        "getme" => Ok(reply(
            StatusCode::OK,
            &json!({"ok": true, "result": {
                "id": 1, "is_bot": true, "first_name": "fake", "username": "fake_bot",
                "can_join_groups": false, "can_read_all_group_messages": false,
                "supports_inline_queries": false
            }}),
        )),
        "sendmessage" => Ok(send_message(&body, &state, epoch).await),
        _ => Ok(error(StatusCode::NOT_FOUND, "Not Found")),
    }
}

async fn send_message(body: &[u8], state: &Mutex<State>, epoch: Instant) -> Reply {
    let Ok(params) = serde_json::from_slice::<Value>(body) else {
        return error(StatusCode::BAD_REQUEST, "Bad Request: not JSON");
    };
    let chat_id = match &params["chat_id"] {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    let Some(chat_id) = chat_id else {
        return error(StatusCode::BAD_REQUEST, "Bad Request: chat not found");
    };
    let Some(text) = params["text"].as_str().filter(|t| !t.is_empty()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "Bad Request: message text is empty",
        );
    };
    let buttons = params["reply_markup"]["inline_keyboard"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_array)
        .flatten()
        .map(|b| {
            let field = |k: &str| b[k].as_str().unwrap_or_default().to_owned();
            (field("text"), field("url"))
        })
        .collect();

    let now = Instant::now();
    let (answer, response) = {
        let mut s = state.lock();
        let fault = s
            .for_chat
            .get_mut(&chat_id)
            .and_then(VecDeque::pop_front)
            .or_else(|| s.for_any.pop_front());
        let over = fault.is_none() && s.over_limit(chat_id, now);
        let (answer, response) = match fault {
            _ if over => {
                s.enforced += 1;
                too_many(1)
            }
            Some(Fault::TooManyRequests { retry_after_secs }) => too_many(retry_after_secs),
            Some(Fault::ServerError(status)) => {
                let status =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                (
                    Answer::Refused {
                        status: status.as_u16(),
                    },
                    error(status, status.canonical_reason().unwrap_or("Server Error")),
                )
            }
            Some(Fault::Blocked) => (
                Answer::Refused { status: 403 },
                error(
                    StatusCode::FORBIDDEN,
                    "Forbidden: bot was blocked by the user",
                ),
            ),
            Some(Fault::Slow(delay)) => s.take(chat_id, text, now, delay),
            None => s.take(chat_id, text, now, Duration::ZERO),
        };
        if matches!(answer, Answer::Refused { status: 429 }) {
            s.too_many += 1;
        }
        s.received.push(Received {
            at: now.duration_since(epoch),
            chat_id,
            text: text.to_owned(),
            parse_mode: params["parse_mode"].as_str().map(str::to_owned),
            buttons,
            answer,
        });
        (answer, response)
    };
    if let Answer::Sent { delay, .. } = answer
        && !delay.is_zero()
    {
        tokio::time::sleep(delay).await;
    }
    response
}

fn too_many(retry_after: u32) -> (Answer, Reply) {
    (
        Answer::Refused { status: 429 },
        reply(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({
                "ok": false,
                "error_code": 429,
                "description": format!("Too Many Requests: retry after {retry_after}"),
                "parameters": {"retry_after": retry_after}
            }),
        ),
    )
}

impl State {
    /// Whether one more message to `chat` now would break the limits.
    fn over_limit(&mut self, chat: i64, now: Instant) -> bool {
        let Some(limits) = self.limits else {
            return false;
        };
        let recent = |q: &mut VecDeque<Instant>| {
            while q
                .front()
                .is_some_and(|t| now.duration_since(*t) >= limits.window)
            {
                q.pop_front();
            }
            q.len()
        };
        recent(&mut self.taken_all) >= limits.overall
            || recent(self.taken_chat.entry(chat).or_default()) >= limits.per_chat
    }

    /// Takes a message: a new message id, counted against the limits.
    fn take(&mut self, chat: i64, text: &str, now: Instant, delay: Duration) -> (Answer, Reply) {
        let message_id = self.next_message_id;
        self.next_message_id += 1;
        self.taken_all.push_back(now);
        self.taken_chat.entry(chat).or_default().push_back(now);
        if self.limits.is_none() {
            // Nothing reads them.
            self.taken_all.clear();
            self.taken_chat.clear();
        }
        let chat_json = if chat < 0 {
            json!({"id": chat, "type": "supergroup", "title": "fake group"})
        } else {
            json!({"id": chat, "type": "private", "first_name": "fake"})
        };
        let result = json!({
            "message_id": message_id,
            "date": 1_700_000_000,
            "chat": chat_json,
            "text": text,
        });
        (
            Answer::Sent { message_id, delay },
            reply(StatusCode::OK, &json!({"ok": true, "result": result})),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_count_is_half_open_and_sliding() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|&m| Duration::from_millis(m))
                .collect::<Vec<_>>()
        };
        let w = Duration::from_secs(1);
        assert_eq!(max_in_window(ms(&[]).into_iter(), w), 0);
        assert_eq!(max_in_window(ms(&[0, 1000, 2000]).into_iter(), w), 1);
        assert_eq!(max_in_window(ms(&[0, 999, 2000]).into_iter(), w), 2);
        assert_eq!(
            max_in_window(ms(&[0, 500, 900, 1400, 1450]).into_iter(), w),
            4
        );
    }
}
