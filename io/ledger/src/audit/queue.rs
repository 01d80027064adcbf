//! The producer side of the audit queue.

use redis::aio::ConnectionLike;

use super::{AuditError, QueueRow};

/// The producer side: appends rows to one stream.
#[derive(Debug, Clone)]
pub struct AuditQueue {
    stream: String,
    max_entries: u64,
}

impl AuditQueue {
    /// Entries a stream may hold before pushes are refused, by default.
    pub const DEFAULT_MAX_ENTRIES: u64 = 10_000_000;

    /// A queue on `stream` (e.g. `{prefix}audit`).
    pub fn new(stream: impl Into<String>) -> AuditQueue {
        AuditQueue {
            stream: stream.into(),
            max_entries: Self::DEFAULT_MAX_ENTRIES,
        }
    }

    /// Refuse pushes once the stream holds `max` entries.
    pub fn with_max_entries(mut self, max: u64) -> AuditQueue {
        self.max_entries = max;
        self
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Entries in the stream: pushed and not yet landed.
    pub async fn len(&self, con: &mut impl ConnectionLike) -> Result<u64, AuditError> {
        Ok(redis::cmd("XLEN")
            .arg(&self.stream)
            .query_async(con)
            .await?)
    }

    /// Appends `rows`, one entry each, in one pipeline. Every row is
    /// encoded before anything is sent, so an unencodable row pushes
    /// nothing. A push that fails on the connection may have appended some
    /// rows: pushing them again lands each alert once, but each activity
    /// again.
    pub async fn push_batch(
        &self,
        con: &mut impl ConnectionLike,
        rows: &[QueueRow],
    ) -> Result<(), AuditError> {
        let mut pipe = redis::pipe();
        for (index, row) in rows.iter().enumerate() {
            let (field, json) = row
                .encode()
                .map_err(|reason| AuditError::Invalid { index, reason })?;
            pipe.cmd("XADD")
                .arg(&self.stream)
                .arg("*")
                .arg(field)
                .arg(json)
                .ignore();
        }
        let len = self.len(con).await?;
        if len >= self.max_entries {
            return Err(AuditError::QueueFull {
                len,
                max: self.max_entries,
            });
        }
        let () = pipe.query_async(con).await?;
        Ok(())
    }
}
