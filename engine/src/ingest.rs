//! Lines to envelopes: numbering, parsing, the one stateful check, and the
//! stream clock.
//!
//! Exactly one [`Ingest`] sees the input, in order, before the router splits
//! it: it gives each line its `seq`, rejects a `settings` line whose result
//! would leave `min_fdv_usd > max_fdv_usd` (that needs the chat's earlier
//! settings), and stamps each event with the stream clock.

use crate::FlatMap;
use crate::event::{ChatId, Envelope, Event};
use crate::parse::{LineError, LineParser};
use crate::time::Nanos;

/// What one line turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Empty or only white space: counted, otherwise skipped.
    Blank,
    Event(Envelope),
    Bad {
        seq: u64,
        error: LineError,
    },
}

/// The ingest stage's state.
#[derive(Debug, Default)]
pub struct Ingest {
    parser: LineParser,
    seq: u64,
    clock: Option<Nanos>,
    /// Each chat's (min_fdv_usd, max_fdv_usd) after its valid settings.
    fdv_bounds: FlatMap<ChatId, (f64, f64)>,
}

impl Ingest {
    pub fn new() -> Self {
        Self::default()
    }

    /// The `seq` of the last line taken.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Takes the next line, without its line ending (a trailing `\r` is
    /// removed here).
    pub fn line(&mut self, line: &[u8]) -> Outcome {
        self.take(line, None)
    }

    /// Takes a line that arrived at `arrived` (a stream entry's time): an
    /// event dated more than `skew` after that is bad, and neither moves
    /// the stream clock nor counts as a chat's settings. CONTRACT.md, "Live
    /// input": one event dated far ahead would otherwise expire every
    /// record. `replay` has no arrival times and uses [`Ingest::line`].
    pub fn line_arrived(&mut self, line: &[u8], arrived: Nanos, skew: Nanos) -> Outcome {
        self.take(line, Some((arrived, skew)))
    }

    fn take(&mut self, line: &[u8], arrival: Option<(Nanos, Nanos)>) -> Outcome {
        self.seq += 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            return Outcome::Blank;
        }
        let event = match self.parser.parse(line) {
            Ok(event) => event,
            Err(error) => {
                return Outcome::Bad {
                    seq: self.seq,
                    error,
                };
            }
        };
        if let Some((arrived, skew)) = arrival
            && event.at() > arrived.saturating_add(skew)
        {
            return Outcome::Bad {
                seq: self.seq,
                error: LineError::Ahead {
                    at: event.at(),
                    arrived,
                    skew,
                },
            };
        }
        self.accept(event)
    }

    /// Takes a line that the reader did not hold because it is over the
    /// length bound.
    pub fn overlong_line(&mut self, len: usize) -> Outcome {
        self.seq += 1;
        Outcome::Bad {
            seq: self.seq,
            error: LineError::TooLong(len),
        }
    }

    /// Takes an event that arrived already typed (from a bot command, say).
    pub fn event(&mut self, event: Event) -> Outcome {
        self.seq += 1;
        self.accept(event)
    }

    fn accept(&mut self, event: Event) -> Outcome {
        if let Event::Settings { chat_id, patch, .. } = &event {
            let (min, max) = self
                .fdv_bounds
                .get(chat_id)
                .copied()
                .unwrap_or((0.0, f64::INFINITY));
            let min = patch.min_fdv_usd.unwrap_or(min);
            let max = patch.max_fdv_usd.unwrap_or(max);
            if min > max {
                return Outcome::Bad {
                    seq: self.seq,
                    error: LineError::FdvRange {
                        chat_id: *chat_id,
                        min,
                        max,
                    },
                };
            }
            self.fdv_bounds.insert(*chat_id, (min, max));
        }
        let clock = self.clock.map_or(event.at(), |c| c.max(event.at()));
        self.clock = Some(clock);
        Outcome::Event(Envelope {
            seq: self.seq,
            clock,
            event,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(min: Option<f64>, max: Option<f64>) -> String {
        let mut s = r#"{"type":"settings","at":"2026-11-25T10:00:00Z","chat_id":9"#.to_owned();
        if let Some(v) = min {
            s += &format!(",\"min_fdv_usd\":{v}");
        }
        if let Some(v) = max {
            s += &format!(",\"max_fdv_usd\":{v}");
        }
        s + "}"
    }

    #[test]
    fn settings_with_min_above_max_is_bad_and_changes_nothing() {
        let mut ing = Ingest::new();
        assert!(matches!(
            ing.line(settings(None, Some(100.0)).as_bytes()),
            Outcome::Event(_)
        ));
        let bad = ing.line(settings(Some(200.0), None).as_bytes());
        let Outcome::Bad { seq: 2, error } = bad else {
            panic!("{bad:?}")
        };
        assert_eq!(
            error.to_string(),
            "settings would leave min_fdv_usd (200) above max_fdv_usd (100) for chat 9"
        );
        // The rejected line left max at 100, so min 100 is still fine.
        assert!(matches!(
            ing.line(settings(Some(100.0), None).as_bytes()),
            Outcome::Event(_)
        ));
    }

    #[test]
    fn blank_lines_count_as_lines() {
        let mut ing = Ingest::new();
        assert_eq!(ing.line(b""), Outcome::Blank);
        assert_eq!(ing.line(b"  \t\r"), Outcome::Blank);
        let Outcome::Event(env) = ing.line(settings(None, None).as_bytes()) else {
            panic!()
        };
        assert_eq!(env.seq, 3);
    }

    #[test]
    fn stream_clock_never_goes_back() {
        let mut ing = Ingest::new();
        let at = |t: &str| format!(r#"{{"type":"settings","at":"{t}","chat_id":1}}"#);
        let clocks: Vec<_> = [
            "2026-01-01T00:00:10Z",
            "2026-01-01T00:00:05Z",
            "2026-01-01T00:00:20Z",
        ]
        .iter()
        .map(|t| match ing.line(at(t).as_bytes()) {
            Outcome::Event(e) => (e.event.at(), e.clock),
            o => panic!("{o:?}"),
        })
        .collect();
        assert_eq!(clocks[1].1, clocks[0].0, "clock keeps the later time");
        assert!(clocks[1].0 < clocks[1].1);
        assert_eq!(clocks[2].1, clocks[2].0);
    }
}
