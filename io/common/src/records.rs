//! The JSON values of the predecessor's Redis records, which callwatch reads
//! and writes as they are (its own additions are optional fields).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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

/// The kind of an alert, as audit rows and outbox entries record it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    CallAlert,
    MultiplierAlert,
}

impl AlertKind {
    /// The value of the `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::CallAlert => "call_alert",
            AlertKind::MultiplierAlert => "multiplier_alert",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
