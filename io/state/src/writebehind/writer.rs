//! The write-behind's commands: each held change as one Redis command
//! (a `SET` with an absolute expiry, or the raise script), the records'
//! JSON written directly, and the pipeline sent.

use callwatch_streams::Conn;
use callwatch_streams::cluster::send_spread;
use engine::time::{self, NANOS_PER_SEC, Nanos};
use redis::Script;

#[cfg(doc)]
use callwatch_common::records::{MultiplierRecord, ProcessedRecord};
use callwatch_streams::classify::has_code;
use callwatch_streams::log::DeadLetters;

use super::{Key, Kind, Op};
use crate::refused::Refused;

/// Raises `last_threshold` of a stored multiplier record, keeping its TTL;
/// a missing record, or one that is not a JSON object, is left alone
/// (returns 0). The record's text is edited in place rather than decoded
/// and encoded again: cjson writes numbers with 14 digits, which would
/// change `fdv_at_call`.
///
/// KEYS[1]: the record. ARGV[1]: the threshold, a JSON number.
pub(super) const RAISE_LUA: &str = r#"
local old = redis.call('GET', KEYS[1])
if not old then return 0 end
local t = tonumber(ARGV[1])
local s, e, last = string.find(old, '"last_threshold"%s*:%s*([^,}%s]+)')
local new
if s then
    local held = tonumber(last)
    if held and held >= t then return 1 end
    new = string.sub(old, 1, s - 1) .. '"last_threshold":' .. ARGV[1] .. string.sub(old, e + 1)
else
    local close = string.find(old, '}%s*$')
    if not close or not string.find(old, '^%s*{%s*"') then return 0 end
    new = string.sub(old, 1, close - 1) .. ',"last_threshold":' .. ARGV[1] .. '}'
end
redis.call('SET', KEYS[1], new, 'KEEPTTL')
return 1
"#;

/// Turns held changes into Redis commands.
pub(super) struct Writer {
    pub(super) con: Conn,
    pub(super) raise: Script,
    pub(super) prefix: String,
    pub(super) ttl_nanos: Nanos,
    pub(super) dead_letters: DeadLetters,
}

impl Writer {
    /// `{prefix}{multiplier|processed_token}:{token}:{chat}` into `out`.
    fn key(&self, (kind, token, chat): &Key, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(self.prefix.as_bytes());
        out.extend_from_slice(match kind {
            Kind::Multiplier => b"multiplier:",
            Kind::Processed => b"processed_token:",
            Kind::Call => b"calls:",
        });
        token.write_to(out);
        out.push(b':');
        out.extend_from_slice(itoa::Buffer::new().format(*chat).as_bytes());
    }

    /// SET with an absolute expiry (`EXAT`). Redis judges it by its own
    /// clock: a moment already past removes the key, as a DEL would, so
    /// this process never compares its clock with the server's.
    fn set_until(&self, pipe: &mut redis::Pipeline, key: &[u8], value: &[u8], from: Nanos) {
        let expires = from
            .saturating_add(self.ttl_nanos)
            .div_euclid(NANOS_PER_SEC)
            + 1;
        pipe.cmd("SET")
            .arg(key)
            .arg(value)
            .arg("EXAT")
            .arg(expires.max(1))
            .ignore();
    }

    /// One command per change of `batch`, in order, in a pipeline without
    /// `MULTI`.
    pub(super) fn pipeline(&self, batch: &[(Key, Op)]) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        let (mut key, mut value) = (Vec::with_capacity(128), Vec::with_capacity(256));
        for (k, op) in batch {
            self.key(k, &mut key);
            match encode(op, &mut value) {
                Write::Set { from } => self.set_until(&mut pipe, &key, &value, from),
                Write::Raise => {
                    pipe.cmd("EVALSHA")
                        .arg(self.raise.get_hash())
                        .arg(1)
                        .arg(&key)
                        .arg(&value)
                        .ignore();
                }
            }
        }
        pipe
    }

    /// The changes of `batch` at the indices of `errors` (one command per
    /// change), each with its key, what it would have written and why not.
    pub(super) fn refused(
        &self,
        batch: &[(Key, Op)],
        errors: Vec<(usize, String)>,
    ) -> Vec<Refused> {
        errors
            .into_iter()
            .map(|(i, reason)| {
                let (k, op) = &batch[i];
                let (mut key, mut value) = (Vec::new(), Vec::new());
                self.key(k, &mut key);
                let write = match encode(op, &mut value) {
                    Write::Set { .. } => "set",
                    Write::Raise => "raise_threshold",
                };
                Refused {
                    key,
                    write,
                    value,
                    reason,
                }
            })
            .collect()
    }
}

/// How a change is written.
enum Write {
    /// `SET` of the value, expiring at `from` + the TTL.
    Set { from: Nanos },
    /// The raise script, given the threshold.
    Raise,
}

/// What `op` writes, into `value`, and how.
fn encode(op: &Op, value: &mut Vec<u8>) -> Write {
    match op {
        Op::Tracking {
            channel_id,
            fdv_at_call,
            started,
            last_threshold,
        } => {
            encode_multiplier(*channel_id, *fdv_at_call, *started, *last_threshold, value);
            Write::Set { from: *started }
        }
        Op::Threshold(t) => {
            value.clear();
            value.extend_from_slice(ryu::Buffer::new().format_finite(*t).as_bytes());
            Write::Raise
        }
        Op::Accepted { at, callers } => {
            encode_accepted(*at, callers, value);
            Write::Set { from: *at }
        }
        Op::Call { at, fdv_usd } => {
            value.clear();
            value.extend_from_slice(b"{\"at\":\"");
            time::write_rfc3339(*at, value);
            value.extend_from_slice(b"\",\"fdv_usd\":");
            number(*fdv_usd, value);
            value.push(b'}');
            Write::Set { from: *at }
        }
    }
}

/// A finite JSON number (the engine's values are checked finite).
fn number(v: f64, out: &mut Vec<u8>) {
    let v = if v.is_finite() {
        v
    } else {
        f64::MAX.copysign(v)
    };
    out.extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes());
}

/// A [`MultiplierRecord`] as JSON, written directly: this runs for every
/// key the write-behind writes.
fn encode_multiplier(
    channel_id: i64,
    fdv_at_call: f64,
    started: Nanos,
    last_threshold: Option<f64>,
    out: &mut Vec<u8>,
) {
    out.clear();
    out.extend_from_slice(b"{\"channel_id\":");
    out.extend_from_slice(itoa::Buffer::new().format(channel_id).as_bytes());
    out.extend_from_slice(b",\"fdv_at_call\":");
    number(fdv_at_call, out);
    out.extend_from_slice(b",\"timestamp\":\"");
    time::write_rfc3339(started, out);
    out.push(b'"');
    if let Some(t) = last_threshold {
        out.extend_from_slice(b",\"last_threshold\":");
        number(t, out);
    }
    out.push(b'}');
}

/// An accepted [`ProcessedRecord`] as JSON.
fn encode_accepted(at: Nanos, callers: &[i64], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(b"{\"status\":\"accepted\",\"timestamp\":\"");
    time::write_rfc3339(at, out);
    out.extend_from_slice(b"\",\"channels_checked\":[");
    let mut ints = itoa::Buffer::new();
    for (i, c) in callers.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(ints.format(*c).as_bytes());
    }
    out.extend_from_slice(b"],\"channels_called_at\":{}}");
}

/// Sends one pipeline (on a cluster, one per master: see
/// [`send_spread`]); loads the script once if the server lost it. Returns
/// the changes Redis refused for their own key, by index.
pub(super) async fn send(
    pipe: redis::Pipeline,
    mut con: Conn,
    raise: Script,
) -> redis::RedisResult<Vec<(usize, String)>> {
    match send_spread(&mut con, &pipe).await {
        // Any command's NOSCRIPT: the first error may be another's.
        Err(e) if has_code(&e, "NOSCRIPT") => {
            raise.load_async(&mut con).await?;
            send_spread(&mut con, &pipe).await
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_encode_as_serde_would_read_them() {
        use callwatch_common::records::{MultiplierRecord, ProcessedRecord};
        let mut out = Vec::new();
        for (fdv, last) in [
            (125_000.0, None),
            (0.1 + 0.2, Some(2.0)),
            (1e21, Some(100.0)),
        ] {
            encode_multiplier(-1001, fdv, 1_795_600_800_123_456_789, last, &mut out);
            let rec: MultiplierRecord = serde_json::from_slice(&out).unwrap();
            assert_eq!(
                rec,
                MultiplierRecord {
                    channel_id: -1001,
                    fdv_at_call: fdv,
                    timestamp: "2026-11-25T10:00:00.123456789Z".to_owned(),
                    last_threshold: last,
                }
            );
        }
        encode_accepted(1_795_600_800_000_000_000, &[-3, -2], &mut out);
        let rec: ProcessedRecord = serde_json::from_slice(&out).unwrap();
        assert_eq!(rec.status, "accepted");
        assert_eq!(rec.timestamp, "2026-11-25T10:00:00Z");
        assert_eq!(rec.channels_checked, [-3, -2]);
        assert!(rec.channels_called_at.is_empty());
    }
}
