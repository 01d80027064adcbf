//! The upgrade-only write of a processed record, for a writer that does not
//! know what Redis holds (the write-behind writes accepted records only,
//! which may replace anything, and needs no script).

use callwatch_common::records::ProcessedRecord;
use redis::Script;

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
