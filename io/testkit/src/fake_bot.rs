//! A fake Telegram Bot API: a test double for the sender's tests and the
//! load test. Not for production.
//!
//! An HTTP/1.1 server on `127.0.0.1:0` that answers `POST
//! /bot<token>/sendMessage` and `sendPhoto` (and `getMe`) as Telegram
//! does, records every message it receives with its own receive time (a
//! photo with its bytes and its caption as the text), and follows a
//! script of misbehaviour: 429 with `retry_after` for one chat or for any,
//! 5xx, slow answers, 403 "bot was blocked by the user", 400. A photo
//! counts against the limits as a text message does; a caption over 1,024
//! characters after its entities is refused as Telegram refuses it.
//!
//! It also plays the receiving side, for the dispatcher's tests: messages
//! queued with [`FakeBotApi::push_text`] come out of `getUpdates` (long
//! polling with `offset`, `timeout` and `limit`, as Telegram's), and
//! `setWebhook` / `deleteWebhook` / `getWebhookInfo` keep the webhook's URL
//! and secret. `getChatMember` answers with the status set for the (chat,
//! user) by [`FakeBotApi::set_member`] (`member` when none was), or fails
//! as scripted by [`FakeBotApi::fail_member_lookups`]. Like Telegram, it refuses `getUpdates` (409) while a webhook
//! is set; it never calls the webhook itself.
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
use tokio::sync::Notify;
use tokio::task::JoinSet;

mod multipart;
mod requests;
use requests::{form_fields, get_chat_member, webhook};

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
    /// 400 `Bad Request`, as for a message Telegram will not take.
    BadRequest,
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

/// One `sendMessage` or `sendPhoto` request as the fake received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// When it arrived, on the fake's clock (since it started).
    pub at: Duration,
    pub chat_id: i64,
    /// The message's text, or the photo's caption.
    pub text: String,
    /// A `sendPhoto`'s file, as sent.
    pub photo: Option<Vec<u8>>,
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

/// A member's status in a chat, as `getChatMember` answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberStatus {
    Creator,
    Administrator,
    Member,
    Left,
}

/// The webhook as the last `setWebhook` left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub url: String,
    pub secret_token: Option<String>,
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
    /// Updates not yet confirmed (an `offset` above their id), in id order.
    updates: VecDeque<(i64, Value)>,
    next_update_id: i64,
    webhook: Option<Webhook>,
    members: HashMap<(i64, i64), MemberStatus>,
    /// `getChatMember` requests still to fail (500), and those received.
    member_faults: usize,
    member_lookups: u64,
    /// The command menu as the last `setMyCommands` set it: (name, text).
    menu: Vec<(String, String)>,
}

/// The running fake. Stops when dropped.
pub struct FakeBotApi {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    /// Wakes the long polls when an update is queued.
    pushed: Arc<Notify>,
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
            next_update_id: 1,
            ..State::default()
        }));
        let pushed = Arc::new(Notify::new());
        let epoch = Instant::now();
        let served = Arc::clone(&state);
        let wake = Arc::clone(&pushed);
        let token: Arc<str> = Arc::from(token);
        let task = tokio::spawn(async move {
            // Dropped (aborting every connection) when the fake is.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let (state, token) = (Arc::clone(&served), Arc::clone(&token));
                        let wake = Arc::clone(&wake);
                        connections.spawn(async move {
                            let service = service_fn(move |req| {
                                let (state, token) = (Arc::clone(&state), Arc::clone(&token));
                                handle(req, state, token, Arc::clone(&wake), epoch)
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
        Ok(FakeBotApi {
            addr,
            state,
            pushed,
            task,
        })
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

    /// Queues a text message from `user_id` in `chat_id` (a private chat
    /// when positive, a group when negative) for `getUpdates`; its
    /// `update_id`.
    pub fn push_text(&self, chat_id: i64, user_id: i64, text: &str) -> i64 {
        let message_id = {
            let mut state = self.state.lock();
            state.next_message_id += 1;
            state.next_message_id - 1
        };
        self.push(json!({"message": {
            "message_id": message_id,
            "date": 1_700_000_000,
            "chat": chat_json(chat_id),
            "from": {"id": user_id, "is_bot": false, "first_name": "fake"},
            "text": text,
        }}))
    }

    /// Queues a post of channel `chat_id` (named `title`) for
    /// `getUpdates`, dated `date` (Unix seconds): `text`, with `links` as
    /// `text_link` entities (links not in the text). With `edit_of`, it is
    /// an `edited_channel_post` of that message; otherwise a new
    /// `channel_post`. Its message id.
    pub fn push_post(
        &self,
        chat_id: i64,
        title: &str,
        date: i64,
        text: &str,
        links: &[&str],
        edit_of: Option<i64>,
    ) -> i64 {
        let message_id = edit_of.unwrap_or_else(|| {
            let mut state = self.state.lock();
            state.next_message_id += 1;
            i64::from(state.next_message_id - 1)
        });
        // Each link is an entity over the whole text, as a caller's
        // "chart" word would be.
        let len = text.encode_utf16().count();
        let entities: Vec<Value> = links
            .iter()
            .map(|url| json!({"type": "text_link", "offset": 0, "length": len, "url": url}))
            .collect();
        let mut message = json!({
            "message_id": message_id,
            "date": date,
            "chat": {"id": chat_id, "type": "channel", "title": title},
            "text": text,
            "entities": entities,
        });
        let kind = if edit_of.is_some() {
            message["edit_date"] = json!(date);
            "edited_channel_post"
        } else {
            "channel_post"
        };
        self.push(json!({ kind: message }));
        message_id
    }

    /// Queues any update: `update` is its body without `update_id` (for
    /// example `{"message": {…, "sticker": {…}}}`); its `update_id`.
    pub fn push(&self, mut update: Value) -> i64 {
        let id = {
            let mut state = self.state.lock();
            let id = state.next_update_id;
            state.next_update_id += 1;
            update["update_id"] = json!(id);
            state.updates.push_back((id, update));
            id
        };
        self.pushed.notify_waiters();
        id
    }

    /// `user_id`'s status in `chat_id` from now on.
    pub fn set_member(&self, chat_id: i64, user_id: i64, status: MemberStatus) {
        self.state.lock().members.insert((chat_id, user_id), status);
    }

    /// The next `times` `getChatMember` requests are answered 500.
    pub fn fail_member_lookups(&self, times: usize) {
        self.state.lock().member_faults += times;
    }

    /// How many `getChatMember` requests it received.
    pub fn member_lookups(&self) -> u64 {
        self.state.lock().member_lookups
    }

    /// Updates queued and not yet confirmed by a `getUpdates` with a
    /// higher `offset`.
    pub fn unconfirmed(&self) -> usize {
        self.state.lock().updates.len()
    }

    /// The webhook set, if any (`deleteWebhook` clears it).
    pub fn webhook(&self) -> Option<Webhook> {
        self.state.lock().webhook.clone()
    }

    /// Every `sendMessage` received so far, in the order received.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().received.clone()
    }

    /// How many `sendMessage` requests it received.
    /// The command menu the bot set (`setMyCommands`), as (name, text).
    pub fn menu(&self) -> Vec<(String, String)> {
        self.state.lock().menu.clone()
    }

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

/// Delivers one update to a webhook as Telegram does: a JSON POST to `path`
/// on `addr`, with the secret header when given. The answer's status.
pub async fn deliver_update(
    addr: SocketAddr,
    path: &str,
    secret: Option<&str>,
    update: &Value,
) -> std::io::Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = update.to_string();
    let secret = secret.map_or(String::new(), |s| {
        format!("X-Telegram-Bot-Api-Secret-Token: {s}\r\n")
    });
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n{secret}\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    answer
        .split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {answer:?}")))
}

/// A text message from `user` in `chat`, as an update of Telegram's shape.
pub fn text_update(update_id: i64, chat: i64, user: i64, text: &str) -> Value {
    json!({"update_id": update_id, "message": {
        "message_id": update_id, "date": 1_700_000_000,
        "chat": {"id": chat, "type": if chat > 0 { "private" } else { "group" }, "first_name": "u"},
        "from": {"id": user, "is_bot": false, "first_name": "u"},
        "text": text,
    }})
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
    pushed: Arc<Notify>,
    epoch: Instant,
) -> Result<Reply, Infallible> {
    let path = req.uri().path().to_owned();
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
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
    let method = method.to_ascii_lowercase();
    match method.as_str() {
        "getme" => Ok(reply(
            StatusCode::OK,
            &json!({"ok": true, "result": {
                "id": 1, "is_bot": true, "first_name": "fake", "username": "fake_bot",
                "can_join_groups": false, "can_read_all_group_messages": false,
                "supports_inline_queries": false, "can_connect_to_business": false,
                "has_main_web_app": false
            }}),
        )),
        "sendmessage" => Ok(match Outgoing::message(&body) {
            Ok(out) => send(out, &state, epoch).await,
            Err(refused) => refused,
        }),
        "sendphoto" => Ok(match Outgoing::photo(&content_type, &body) {
            Ok(out) => send(out, &state, epoch).await,
            Err(refused) => refused,
        }),
        "getupdates" => Ok(get_updates(&body, &state, &pushed).await),
        "getchatmember" => Ok(get_chat_member(&body, &state)),
        "setmycommands" => Ok(set_my_commands(&body, &state)),
        "setwebhook" | "deletewebhook" | "getwebhookinfo" => {
            // setWebhook comes as a form (it may carry a certificate).
            let Some(params) = form_fields(&content_type, &body) else {
                return Ok(error(
                    StatusCode::BAD_REQUEST,
                    "Bad Request: unreadable form",
                ));
            };
            Ok(webhook(&method, &params, &state))
        }
        _ => Ok(error(StatusCode::NOT_FOUND, "Not Found")),
    }
}

/// `setMyCommands`: keeps the menu, checked as Telegram checks it (1 to
/// 100 commands, a name of 1-32 of `a-z0-9_`, a description of 1-256).
fn set_my_commands(body: &[u8], state: &Mutex<State>) -> Reply {
    let Ok(params) = serde_json::from_slice::<Value>(body) else {
        return error(StatusCode::BAD_REQUEST, "Bad Request: not JSON");
    };
    let Some(commands) = params["commands"].as_array() else {
        return error(StatusCode::BAD_REQUEST, "Bad Request: commands are missing");
    };
    let mut menu = Vec::new();
    for c in commands {
        let (Some(name), Some(what)) = (c["command"].as_str(), c["description"].as_str()) else {
            return error(
                StatusCode::BAD_REQUEST,
                "Bad Request: a command without its fields",
            );
        };
        let name_ok = (1..=32).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !name_ok || !(1..=256).contains(&what.chars().count()) {
            return error(StatusCode::BAD_REQUEST, "Bad Request: BOT_COMMAND_INVALID");
        }
        menu.push((name.to_owned(), what.to_owned()));
    }
    if menu.is_empty() || menu.len() > 100 {
        return error(
            StatusCode::BAD_REQUEST,
            "Bad Request: BOT_COMMANDS_TOO_MUCH",
        );
    }
    state.lock().menu = menu;
    reply(StatusCode::OK, &json!({"ok": true, "result": true}))
}

/// `getUpdates`: confirms the updates below `offset` (a negative one keeps
/// only the last `-offset`), then answers with up to `limit` (1–100,
/// default 100) of the rest, waiting up to `timeout` seconds for one.
async fn get_updates(body: &[u8], state: &Mutex<State>, pushed: &Notify) -> Reply {
    let params = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(p) => p,
            Err(_) => return error(StatusCode::BAD_REQUEST, "Bad Request: not JSON"),
        }
    };
    let offset = params["offset"].as_i64().unwrap_or(0);
    let limit = params["limit"].as_u64().unwrap_or(100).clamp(1, 100) as usize;
    let timeout = Duration::from_secs(params["timeout"].as_u64().unwrap_or(0));
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        // Registered before looking, so a push in between still wakes it.
        let woken = pushed.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        {
            let mut s = state.lock();
            if s.webhook.is_some() {
                return error(
                    StatusCode::CONFLICT,
                    "Conflict: can't use getUpdates method while webhook is active; \
                     use deleteWebhook to delete the webhook first",
                );
            }
            if offset < 0 {
                let keep = offset.unsigned_abs() as usize;
                let drop = s.updates.len().saturating_sub(keep);
                s.updates.drain(..drop);
            } else {
                while s.updates.front().is_some_and(|(id, _)| *id < offset) {
                    s.updates.pop_front();
                }
            }
            if !s.updates.is_empty() || tokio::time::Instant::now() >= deadline {
                let result: Vec<&Value> = s.updates.iter().take(limit).map(|(_, u)| u).collect();
                return reply(StatusCode::OK, &json!({"ok": true, "result": result}));
            }
        }
        // Timing out only ends the wait: the loop answers (empty) then.
        let _ = tokio::time::timeout_at(deadline, woken).await;
    }
}

/// A message to send, read from either method's request.
struct Outgoing {
    chat_id: i64,
    text: String,
    parse_mode: Option<String>,
    buttons: Vec<(String, String)>,
    photo: Option<Vec<u8>>,
}

fn bad_request(what: &str) -> Reply {
    error(StatusCode::BAD_REQUEST, &format!("Bad Request: {what}"))
}

fn chat_id_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The buttons of a `reply_markup`, (text, url), row after row.
fn buttons_of(markup: &Value) -> Vec<(String, String)> {
    markup["inline_keyboard"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_array)
        .flatten()
        .map(|b| {
            let field = |k: &str| b[k].as_str().unwrap_or_default().to_owned();
            (field("text"), field("url"))
        })
        .collect()
}

/// Length of HTML text once Telegram has parsed its entities: tags
/// dropped, an entity one character, in UTF-16 units.
fn shown_units(html: &str) -> usize {
    let (mut shown, mut in_tag, mut in_entity) = (0, false, false);
    for ch in html.chars() {
        match ch {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if in_tag => {}
            '&' => {
                in_entity = true;
                shown += 1;
            }
            ';' if in_entity => in_entity = false,
            _ if in_entity => {}
            _ => shown += ch.len_utf16(),
        }
    }
    shown
}

impl Outgoing {
    /// `sendMessage`: JSON, as teloxide sends it.
    fn message(body: &[u8]) -> Result<Outgoing, Reply> {
        let params = serde_json::from_slice::<Value>(body).map_err(|_| bad_request("not JSON"))?;
        let chat_id =
            chat_id_of(&params["chat_id"]).ok_or_else(|| bad_request("chat not found"))?;
        let text = params["text"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad_request("message text is empty"))?;
        Ok(Outgoing {
            chat_id,
            text: text.to_owned(),
            parse_mode: params["parse_mode"].as_str().map(str::to_owned),
            buttons: buttons_of(&params["reply_markup"]),
            photo: None,
        })
    }

    /// `sendPhoto`: `multipart/form-data` with the markup as JSON text and
    /// the file as the `photo` part, or (as teloxide sends it) `photo`
    /// saying `attach://NAME` and the file in the part NAME.
    fn photo(content_type: &str, body: &[u8]) -> Result<Outgoing, Reply> {
        let parts = multipart::boundary(content_type)
            .and_then(|b| multipart::parts(b, body))
            .ok_or_else(|| bad_request("not a multipart form"))?;
        let field = |name: &str| {
            parts
                .iter()
                .find(|p| p.name == name)
                .map(|p| String::from_utf8_lossy(&p.bytes).into_owned())
        };
        let chat_id = field("chat_id")
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| bad_request("chat not found"))?;
        let file = field("photo")
            .and_then(|p| p.strip_prefix("attach://").map(str::to_owned))
            .unwrap_or_else(|| "photo".to_owned());
        let photo = parts
            .iter()
            .find(|p| p.name == file && p.file_name.is_some() && !p.bytes.is_empty())
            .ok_or_else(|| bad_request("there is no photo in the request"))?;
        let text = field("caption").unwrap_or_default();
        if shown_units(&text) > 1024 {
            return Err(bad_request("message caption is too long"));
        }
        let markup = field("reply_markup")
            .and_then(|m| serde_json::from_str(&m).ok())
            .unwrap_or(Value::Null);
        Ok(Outgoing {
            chat_id,
            text,
            parse_mode: field("parse_mode"),
            buttons: buttons_of(&markup),
            photo: Some(photo.bytes.clone()),
        })
    }
}

/// Answers a message, text or photo alike: scripted faults first, then
/// the limits, then taken and recorded.
async fn send(out: Outgoing, state: &Mutex<State>, epoch: Instant) -> Reply {
    let chat_id = out.chat_id;
    let text = out.text.as_str();
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
            Some(Fault::BadRequest) => (
                Answer::Refused { status: 400 },
                bad_request("wrong file identifier/HTTP URL specified"),
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
            photo: out.photo,
            parse_mode: out.parse_mode,
            buttons: out.buttons,
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
        let result = json!({
            "message_id": message_id,
            "date": 1_700_000_000,
            "chat": chat_json(chat),
            "text": text,
        });
        (
            Answer::Sent { message_id, delay },
            reply(StatusCode::OK, &json!({"ok": true, "result": result})),
        )
    }
}

/// A chat as Telegram shows it: private for a user's id, a supergroup for
/// `-100…` ids, a group for other negative ones.
fn chat_json(chat: i64) -> Value {
    const SUPERGROUP_BELOW: i64 = -1_000_000_000_000;
    if chat <= SUPERGROUP_BELOW {
        json!({"id": chat, "type": "supergroup", "title": "fake supergroup"})
    } else if chat < 0 {
        json!({"id": chat, "type": "group", "title": "fake group"})
    } else {
        json!({"id": chat, "type": "private", "first_name": "fake"})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_read_from_a_form_or_from_json() {
        let form = "--XyZ\r\nContent-Disposition: form-data; name=\"url\"\r\n\r\n\
                    https://h/p\r\n--XyZ\r\nContent-Disposition: form-data; \
                    name=\"secret_token\"\r\nContent-Type: text/plain\r\n\r\nabc\r\n--XyZ--\r\n";
        let fields = form_fields("multipart/form-data; boundary=XyZ", form.as_bytes()).unwrap();
        assert_eq!(fields.len(), 2);
        assert_eq!(fields["url"], "https://h/p");
        assert_eq!(fields["secret_token"], "abc");
        let fields = form_fields("application/json", br#"{"a":"x","b":true,"c":3}"#).unwrap();
        assert_eq!(
            (&*fields["a"], &*fields["b"], &*fields["c"]),
            ("x", "true", "3")
        );
        assert_eq!(form_fields("", b""), Some(HashMap::new()));
        assert_eq!(form_fields("application/json", b"[1]"), None);
    }

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
