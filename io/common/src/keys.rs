//! Redis state in the predecessor's key layout, so a running deployment can
//! switch over: the keys, their JSON values, their TTLs, and the atomic
//! upgrade of processed records.
//!
//! | key | value | TTL |
//! | --- | --- | --- |
//! | `multiplier:{token}:{chat_id}` | [`MultiplierRecord`] | 7 days |
//! | `processed_token:{token}:{chat_id}` | [`ProcessedRecord`] | the engine's ttl (7 days) |
//! | `subscription:{chat_id}` | plan, expires_at, status | 365 days |
//! | `channel:{id}:info` | channel name and details | 30 minutes |

use std::collections::BTreeMap;

use engine::token::Token;
use redis::Script;
use serde::{Deserialize, Serialize};

/// Seconds a multiplier (tracking) record lives, as in the seed.
pub const MULTIPLIER_TTL_SECS: u64 = 7 * 24 * 3600;
/// Seconds a subscription record lives, as in the seed.
pub const SUBSCRIPTION_TTL_SECS: u64 = 365 * 24 * 3600;
/// Seconds a cached channel description lives, as in the seed.
pub const CHANNEL_INFO_TTL_SECS: u64 = 30 * 60;

pub fn multiplier_key(token: &Token, chat_id: i64) -> String {
    format!("multiplier:{token}:{chat_id}")
}

pub fn processed_key(token: &Token, chat_id: i64) -> String {
    format!("processed_token:{token}:{chat_id}")
}

pub fn subscription_key(chat_id: i64) -> String {
    format!("subscription:{chat_id}")
}

pub fn channel_info_key(channel_id: i64) -> String {
    format!("channel:{channel_id}:info")
}

/// The (token, chat) of a `{prefix}:{token}:{chat_id}` key, if it is one.
pub fn parse_pair_key(prefix: &str, key: &str) -> Option<(Token, i64)> {
    let rest = key.strip_prefix(prefix)?.strip_prefix(':')?;
    let (token, chat) = rest.rsplit_once(':')?;
    Some((Token::parse(token).ok()?, chat.parse().ok()?))
}

/// `multiplier:{token}:{chat_id}`: a chat's tracking of a token. The seed
/// wrote the first three fields; callwatch adds `last_threshold` and reads
/// its absence as "none reached yet".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultiplierRecord {
    /// The seed stored whatever id type it had; numbers and numeric strings
    /// both load.
    #[serde(with = "loose_id")]
    pub channel_id: i64,
    pub fdv_at_call: f64,
    /// When tracking started, ISO 8601 (the seed's `isoformat()`).
    pub timestamp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_threshold: Option<f64>,
}

/// `processed_token:{token}:{chat_id}`: the outcome of checking a token for
/// a chat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessedRecord {
    /// `accepted` or `rejected`.
    pub status: String,
    /// The last check, ISO 8601.
    pub timestamp: String,
    #[serde(default)]
    pub channels_checked: Vec<i64>,
    /// Channel id (as a string, JSON object keys being strings) → call time.
    #[serde(default)]
    pub channels_called_at: BTreeMap<String, String>,
}

/// Accepts a channel id written as a number or as a string of digits.
mod loose_id {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(*v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Id {
            Num(i64),
            Text(String),
        }
        match Id::deserialize(d)? {
            Id::Num(v) => Ok(v),
            Id::Text(s) => s
                .parse()
                .map_err(|_| D::Error::custom(format!("channel_id `{s}` is not a number"))),
        }
    }
}

/// Writes a processed record unless that would downgrade it: an `accepted`
/// record is never replaced by a `rejected` one. Read, compare and write
/// happen in one script, so concurrent writers cannot interleave (the
/// seed's SET NX / GET / SETEX sequence could). Unparseable old values are
/// replaced. Returns 1 if written, 0 if the accepted record was kept.
///
/// KEYS[1]: the record's key. ARGV[1]: the new JSON value. ARGV[2]: TTL in
/// seconds. ARGV[3]: the new value's status.
const UPGRADE_LUA: &str = r"
local old = redis.call('GET', KEYS[1])
if old and ARGV[3] ~= 'accepted' then
    local ok, decoded = pcall(cjson.decode, old)
    if ok and type(decoded) == 'table' and decoded['status'] == 'accepted' then
        return 0
    end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
";

/// The upgrade-only write of processed records. Sends EVALSHA, and when the
/// server answers NOSCRIPT (after a restart or SCRIPT FLUSH) sends the
/// script's text with EVAL, which caches it again. Not `SCRIPT LOAD` and
/// EVALSHA again, as `redis::Script` does: the cache can be emptied again
/// between those two, and the write would fail.
#[derive(Debug, Clone)]
pub struct ProcessedWriter {
    script: Script,
}

impl Default for ProcessedWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessedWriter {
    pub fn new() -> Self {
        ProcessedWriter {
            script: Script::new(UPGRADE_LUA),
        }
    }

    /// Writes `record` under `key` unless the stored one is accepted and
    /// this one is not; says whether it wrote.
    pub async fn write(
        &self,
        con: &mut impl redis::aio::ConnectionLike,
        key: &str,
        record: &ProcessedRecord,
        ttl_secs: u64,
    ) -> redis::RedisResult<bool> {
        let json = serde_json::to_string(record).expect("records serialise");
        let call = |command: &str, script: &str| {
            let mut cmd = redis::cmd(command);
            cmd.arg(script)
                .arg(1)
                .arg(key)
                .arg(&json)
                .arg(ttl_secs)
                .arg(&record.status);
            cmd
        };
        let written: i64 = match call("EVALSHA", self.script.get_hash())
            .query_async(con)
            .await
        {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                call("EVAL", UPGRADE_LUA).query_async(con).await?
            }
            other => other?,
        };
        Ok(written == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOL: &str = "So11111111111111111111111111111111111111112";

    #[test]
    fn keys_follow_the_seeds_layout() {
        let t: Token = SOL.parse().unwrap();
        assert_eq!(multiplier_key(&t, -42), format!("multiplier:{SOL}:-42"));
        assert_eq!(processed_key(&t, 7), format!("processed_token:{SOL}:7"));
        assert_eq!(subscription_key(7), "subscription:7");
        assert_eq!(channel_info_key(-1001), "channel:-1001:info");
        assert_eq!(
            parse_pair_key("multiplier", &format!("multiplier:{SOL}:-42")),
            Some((t, -42))
        );
        assert_eq!(parse_pair_key("multiplier", "multiplier:nope:1"), None);
        assert_eq!(
            parse_pair_key("multiplier", &format!("processed_token:{SOL}:1")),
            None
        );
    }

    #[test]
    fn seed_written_records_load_as_they_are() {
        // As the seed's json.dumps wrote them: spaces, no last_threshold,
        // an isoformat timestamp, sometimes a string channel id.
        let a: MultiplierRecord = serde_json::from_str(
            r#"{"channel_id": -1001234, "fdv_at_call": 125000.0, "timestamp": "2026-11-25T10:05:00.123456+00:00"}"#,
        )
        .unwrap();
        assert_eq!(a.channel_id, -1001234);
        assert_eq!(a.last_threshold, None);
        let b: MultiplierRecord = serde_json::from_str(
            r#"{"channel_id": "-1001234", "fdv_at_call": 5, "timestamp": "2026-11-25T10:05:00+00:00"}"#,
        )
        .unwrap();
        assert_eq!(b.channel_id, -1001234);
        let p: ProcessedRecord = serde_json::from_str(
            r#"{"status": "rejected", "timestamp": "2026-11-25T10:05:00+00:00", "channels_checked": [-1, -2], "channels_called_at": {"-1": "2026-11-25T10:00:00+00:00"}}"#,
        )
        .unwrap();
        assert_eq!(p.channels_checked, [-1, -2]);
        assert!(
            serde_json::from_str::<MultiplierRecord>(
                r#"{"channel_id": "x", "fdv_at_call": 1, "timestamp": ""}"#
            )
            .is_err()
        );
    }

    #[test]
    fn callwatch_writes_last_threshold_only_when_reached() {
        let mut r = MultiplierRecord {
            channel_id: -1,
            fdv_at_call: 2.0,
            timestamp: "2026-11-25T10:00:00Z".into(),
            last_threshold: None,
        };
        assert!(
            !serde_json::to_string(&r)
                .unwrap()
                .contains("last_threshold")
        );
        r.last_threshold = Some(10.0);
        let back: MultiplierRecord =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
