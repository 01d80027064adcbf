//! The rows the audit queue carries, and their encoding as stream entries.

use engine::effect::Effect;
use engine::time::Nanos;
use serde::{Deserialize, Serialize};

pub use callwatch_common::records::AlertKind;

/// One row of `alert_audit`, as queued. The Telegram columns are filled
/// later, when the alert is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRow {
    pub chat_id: i64,
    /// The token's address.
    pub token: String,
    pub kind: AlertKind,
    /// The multiple reached; 0 for call alerts.
    pub threshold: f64,
    pub alert_at: Nanos,
    pub fdv_usd: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fdv_at_call: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<f64>,
    /// The channels that called the token (call alerts); stored as NULL
    /// when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub callers: Vec<i64>,
}

impl AuditRow {
    /// The audit row of an alert; `None` for effects that are not alerts.
    /// A multiple too large for an f64 is stored as the largest finite one,
    /// as the alert's JSON prints it (JSON has no infinity).
    pub fn from_effect(effect: &Effect) -> Option<AuditRow> {
        fn finite(v: f64) -> f64 {
            if v.is_finite() {
                v
            } else {
                f64::MAX.copysign(v)
            }
        }
        match effect {
            Effect::CallAlert(a) => Some(AuditRow {
                chat_id: a.chat_id,
                token: a.token.to_string(),
                kind: AlertKind::CallAlert,
                threshold: 0.0,
                alert_at: a.at,
                fdv_usd: finite(a.fdv_usd),
                fdv_at_call: None,
                multiplier: None,
                callers: a.callers.to_vec(),
            }),
            Effect::MultiplierAlert(a) => Some(AuditRow {
                chat_id: a.chat_id,
                token: a.token.to_string(),
                kind: AlertKind::MultiplierAlert,
                threshold: a.threshold,
                alert_at: a.at,
                fdv_usd: finite(a.fdv_usd),
                fdv_at_call: Some(finite(a.fdv_at_call)),
                multiplier: Some(finite(a.multiplier)),
                callers: Vec::new(),
            }),
            // State-only effects (progress), and any the engine adds later
            // that are not alerts.
            _ => None,
        }
    }

    fn check(&self) -> Result<(), String> {
        let floats = [Some(self.threshold), Some(self.fdv_usd)]
            .into_iter()
            .chain([self.fdv_at_call, self.multiplier]);
        if floats.flatten().all(f64::is_finite) {
            Ok(())
        } else {
            Err("a number is not finite (JSON cannot carry it)".to_owned())
        }
    }
}

/// What a user did, as pushed; the queue gives it its `event_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Activity {
    pub chat_id: i64,
    pub activity_type: String,
    #[serde(default)]
    pub metadata: serde_json::Value,
    pub created_at: Nanos,
}

/// One row of `activity_log`: an activity and the id of the stream entry
/// that carried it, its natural key.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityRow {
    pub event_id: String,
    pub activity: Activity,
}

/// One queued row.
#[derive(Debug, Clone, PartialEq)]
pub enum QueueRow {
    Audit(AuditRow),
    Activity(Activity),
}

/// The stream field that carries an [`AuditRow`] as JSON.
pub const AUDIT_FIELD: &str = "audit";
/// The stream field that carries an [`Activity`] as JSON.
pub const ACTIVITY_FIELD: &str = "activity";

impl QueueRow {
    /// The entry's one field and its JSON value.
    pub fn encode(&self) -> Result<(&'static str, Vec<u8>), String> {
        let encoded = match self {
            QueueRow::Audit(r) => {
                r.check()?;
                (AUDIT_FIELD, serde_json::to_vec(r))
            }
            QueueRow::Activity(a) => (ACTIVITY_FIELD, serde_json::to_vec(a)),
        };
        match encoded {
            (field, Ok(json)) => Ok((field, json)),
            (_, Err(e)) => Err(e.to_string()),
        }
    }

    /// The row an entry's field and value carry.
    pub fn decode(field: &[u8], value: &[u8]) -> Result<QueueRow, String> {
        let bad = |e: serde_json::Error| format!("value is not a row: {e}");
        match field {
            f if f == AUDIT_FIELD.as_bytes() => {
                let row: AuditRow = serde_json::from_slice(value).map_err(bad)?;
                row.check()?;
                Ok(QueueRow::Audit(row))
            }
            f if f == ACTIVITY_FIELD.as_bytes() => Ok(QueueRow::Activity(
                serde_json::from_slice(value).map_err(bad)?,
            )),
            other => Err(format!(
                "unknown field `{}`",
                String::from_utf8_lossy(other)
            )),
        }
    }
}

/// A multiplier alert's row, for the audit module's tests.
#[cfg(test)]
pub(super) fn sample_row() -> AuditRow {
    AuditRow {
        chat_id: -1001,
        token: "So11111111111111111111111111111111111111112".to_owned(),
        kind: AlertKind::MultiplierAlert,
        threshold: 2.5,
        alert_at: 1_795_000_000_123_456_789,
        fdv_usd: 1_562_500.0,
        fdv_at_call: Some(625_000.0),
        multiplier: Some(2.5),
        callers: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::effect::{CallAlert, MultiplierAlert, Progress};
    use engine::token::Token;

    fn audit() -> AuditRow {
        sample_row()
    }

    #[test]
    fn rows_round_trip_through_their_encoding() {
        let call = AuditRow {
            kind: AlertKind::CallAlert,
            threshold: 0.0,
            fdv_at_call: None,
            multiplier: None,
            callers: vec![-1002, -1001, 7],
            alert_at: -5,
            ..audit()
        };
        let activity = Activity {
            chat_id: 42,
            activity_type: "settings".to_owned(),
            metadata: serde_json::json!({"min_fdv_usd": 10_000, "note": "é\"\n"}),
            created_at: 1_795_000_000_000_000_000,
        };
        let bare = Activity {
            metadata: serde_json::Value::Null,
            ..activity.clone()
        };
        for row in [
            QueueRow::Audit(audit()),
            QueueRow::Audit(call),
            QueueRow::Activity(activity),
            QueueRow::Activity(bare),
        ] {
            let (field, json) = row.encode().unwrap();
            assert_eq!(QueueRow::decode(field.as_bytes(), &json).unwrap(), row);
        }
    }

    #[test]
    fn encoding_leaves_out_empty_fields() {
        let (_, json) = QueueRow::Audit(audit()).encode().unwrap();
        let json = String::from_utf8(json).unwrap();
        assert!(!json.contains("callers"), "{json}");
        let call = AuditRow {
            fdv_at_call: None,
            multiplier: None,
            ..audit()
        };
        let (_, json) = QueueRow::Audit(call).encode().unwrap();
        let json = String::from_utf8(json).unwrap();
        assert!(
            !json.contains("fdv_at_call") && !json.contains("multiplier\""),
            "{json}"
        );
    }

    #[test]
    fn rows_json_cannot_carry_are_refused() {
        let mut row = audit();
        row.multiplier = Some(f64::INFINITY);
        assert!(QueueRow::Audit(row).encode().is_err());
        let nan = br#"{"chat_id":1,"token":"t","kind":"call_alert","threshold":0,"alert_at":0,"fdv_usd":null}"#;
        assert!(QueueRow::decode(b"audit", nan).is_err());
    }

    #[test]
    fn malformed_entries_are_reasons_not_panics() {
        for (field, value) in [
            (&b"audit"[..], &b"{not json"[..]),
            (b"audit", br#"{"chat_id":1}"#),
            (
                b"audit",
                br#"{"chat_id":1,"token":"t","kind":"buy","threshold":0,"alert_at":0,"fdv_usd":1}"#,
            ),
            (b"activity", b"[]"),
            (b"other", b"{}"),
        ] {
            assert!(QueueRow::decode(field, value).is_err());
        }
    }

    #[test]
    fn alerts_become_audit_rows() {
        let token = Token::parse("So11111111111111111111111111111111111111112").unwrap();
        let call = Effect::CallAlert(CallAlert {
            seq: 1,
            chat_id: 5,
            token,
            at: 100,
            fdv_usd: 50_000.0,
            callers: vec![-3, -2].into(),
            channel_id: -2,
        });
        let row = AuditRow::from_effect(&call).unwrap();
        assert_eq!(
            (row.kind, row.threshold, row.callers.as_slice()),
            (AlertKind::CallAlert, 0.0, &[-3, -2][..])
        );
        assert_eq!(row.token, token.to_string());
        let multiple = Effect::MultiplierAlert(MultiplierAlert {
            seq: 2,
            chat_id: 5,
            token,
            at: 200,
            threshold: 10.0,
            multiplier: f64::INFINITY,
            fdv_at_call: 1e-300,
            fdv_usd: 1e10,
            tracking_started: 100,
        });
        let row = AuditRow::from_effect(&multiple).unwrap();
        assert_eq!(row.kind.as_str(), "multiplier_alert");
        assert_eq!(row.multiplier, Some(f64::MAX));
        assert!(QueueRow::Audit(row).encode().is_ok());
        let silent = Effect::Progress(Progress {
            seq: 3,
            chat_id: 5,
            token: Token::parse("So11111111111111111111111111111111111111112").unwrap(),
            threshold: 2.0,
            tracking_started: 100,
        });
        assert_eq!(AuditRow::from_effect(&silent), None);
    }
}
