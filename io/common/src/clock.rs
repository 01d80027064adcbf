//! Wall-clock times as the engine counts them (nanoseconds since the Unix
//! epoch, [`Nanos`]) and as PostgreSQL and the standard library take them
//! ([`SystemTime`]). The engine reads no clock; the I/O side stamps what it
//! publishes with [`now`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use engine::time::Nanos;

/// `t` in nanoseconds since the epoch (negative before it), saturating.
pub fn nanos_of(t: SystemTime) -> Nanos {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Nanos::try_from(d.as_nanos()).unwrap_or(Nanos::MAX),
        Err(e) => -Nanos::try_from(e.duration().as_nanos()).unwrap_or(Nanos::MAX),
    }
}

/// `t` as a [`SystemTime`], on either side of the epoch.
pub fn system_time(t: Nanos) -> SystemTime {
    let magnitude = Duration::from_nanos(t.unsigned_abs());
    if t >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

/// Now, by the wall clock.
pub fn now() -> Nanos {
    nanos_of(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_convert_on_both_sides_of_the_epoch_and_back() {
        assert_eq!(system_time(1_500), UNIX_EPOCH + Duration::from_nanos(1_500));
        assert_eq!(
            system_time(-1_500),
            UNIX_EPOCH - Duration::from_nanos(1_500)
        );
        for t in [0, 1, -1_500_000_000, 1_800_000_000_123_456_789] {
            assert_eq!(nanos_of(system_time(t)), t);
        }
    }
}
