//! The Redis server's clock, as seen from this process.
//!
//! Stream entry ids are stamped by the server's clock, so an event stamped
//! by it lines up with its entry whatever this machine's clock says: a
//! producer that reads the clock for an event's time (a price polled, a
//! command's settings) asks this one, and the check that an event is not
//! dated ahead of its arrival compares like with like.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionLike;

/// Now by the server's clock, asked once (`TIME`, one round trip): for a
/// writer of rare events (a command's settings, a subscription) that has
/// no [`ServerClock`] to keep in step. An event stamped by it is never
/// dated ahead of the stream entry that carries it, whatever this
/// machine's clock says.
pub async fn server_now(con: &mut impl ConnectionLike) -> redis::RedisResult<i64> {
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(con).await?;
    Ok(secs
        .saturating_mul(1_000_000_000)
        .saturating_add(micros * 1_000))
}

/// The server's time minus this machine's, learnt from `TIME`.
#[derive(Debug, Default)]
pub struct ServerClock {
    offset_nanos: AtomicI64,
}

fn local_nanos() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

impl ServerClock {
    /// Asks the server for its time and keeps the offset (the answer taken
    /// to stand for the middle of the round trip). Until it succeeds once,
    /// the offset is zero: this machine's clock.
    pub async fn sync(&self, con: &mut impl ConnectionLike) -> redis::RedisResult<()> {
        let asked = local_nanos();
        let started = Instant::now();
        let server = server_now(con).await?;
        let half_trip = i64::try_from(started.elapsed().as_nanos() / 2).unwrap_or(0);
        self.offset_nanos
            .store(server - (asked + half_trip), Ordering::Relaxed);
        Ok(())
    }

    /// Now, by the server's clock (nanoseconds since the Unix epoch).
    pub fn now(&self) -> i64 {
        local_nanos().saturating_add(self.offset_nanos.load(Ordering::Relaxed))
    }

    /// The server's time minus this machine's, as last learnt.
    pub fn offset_nanos(&self) -> i64 {
        self.offset_nanos.load(Ordering::Relaxed)
    }
}
