//! Property tests for the line parser: arbitrary bytes never panic it and
//! every bad line is reported; mutated good lines likewise; any event the
//! engine can represent survives a write/parse round trip.

use engine::event::{Event, SettingsPatch};
use engine::ingest::{Ingest, Outcome};
use engine::parse::LineParser;
use engine::time::NANOS_PER_SEC;
use engine::token::Token;
use proptest::prelude::*;

const GOOD: [&str; 4] = [
    r#"{"type":"price","at":"2026-11-25T10:00:00Z","token":"So11111111111111111111111111111111111111112","fdv_usd":125000.0}"#,
    r#"{"type":"call","at":"2026-11-25T10:00:00.5+02:00","token":"0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48","channel_id":-1001,"fdv_usd":9e4}"#,
    r#"{"type":"settings","at":"2026-11-25T10:00:00Z","chat_id":42,"min_callers":3,"lookback_minutes":90,"min_fdv_usd":0,"max_fdv_usd":1e9,"follow":[-1,-2]}"#,
    r#"{"type":"subscribe","at":"2026-11-25T10:00:00Z","chat_id":42,"expires_at":"2026-12-25T10:00:00Z","plan":"month \"pro\""}"#,
];

/// Every non-blank line is either an event or a reported bad line with its
/// own line number; nothing panics.
fn check_line(bytes: &[u8]) {
    let mut ingest = Ingest::new();
    match ingest.line(bytes) {
        Outcome::Blank => {
            assert!(bytes.iter().all(u8::is_ascii_whitespace));
        }
        Outcome::Event(env) => assert_eq!(env.seq, 1),
        Outcome::Bad { seq, error } => {
            assert_eq!(seq, 1);
            assert!(!error.to_string().is_empty());
        }
    }
}

#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let byte = prop_oneof![
        any::<u8>(),
        Just(b'"'),
        Just(b'{'),
        Just(b'}'),
        Just(b','),
        Just(b':'),
        Just(b'['),
        Just(b'0'),
        Just(b'-'),
        Just(b'\\'),
    ];
    prop::collection::vec(
        prop_oneof![
            (any::<usize>(), byte.clone()).prop_map(|(i, b)| Edit::Flip(i, b)),
            (any::<usize>(), byte).prop_map(|(i, b)| Edit::Insert(i, b)),
            any::<usize>().prop_map(Edit::Delete),
        ],
        1..6,
    )
}

fn tokens() -> impl Strategy<Value = Token> {
    prop_oneof![
        any::<[u8; 32]>().prop_map(Token::solana),
        any::<[u8; 20]>().prop_map(Token::evm),
    ]
}

fn times() -> impl Strategy<Value = i64> {
    // 1970 to 2200, any nanosecond.
    0i64..(230 * 365 * 86_400 * NANOS_PER_SEC)
}

fn ids() -> impl Strategy<Value = i64> {
    any::<i64>().prop_filter("ids are never 0", |v| *v != 0)
}

fn positive() -> impl Strategy<Value = f64> {
    prop_oneof![
        (1e-300f64..1e300),
        Just(f64::MIN_POSITIVE),
        Just(f64::MAX),
        (1u32..1_000_000).prop_map(f64::from),
    ]
}

fn events() -> impl Strategy<Value = Event> {
    prop_oneof![
        (tokens(), positive(), times()).prop_map(|(token, fdv_usd, at)| Event::Price {
            token,
            fdv_usd,
            at
        }),
        (tokens(), ids(), positive(), times()).prop_map(|(token, channel_id, fdv_usd, at)| {
            Event::Call {
                token,
                channel_id,
                fdv_usd,
                at,
            }
        }),
        (ids(), times(), times(), proptest::option::of(".{0,20}")).prop_map(
            |(chat_id, at, expires_at, plan)| Event::Subscribe {
                chat_id,
                at,
                expires_at,
                plan: plan.map(Into::into),
            }
        ),
        (
            ids(),
            times(),
            proptest::option::of(1u32..=100),
            proptest::option::of(1u32..=10_080),
            proptest::option::of(0.0f64..1e12),
            proptest::option::of(prop::collection::btree_set(ids(), 0..8)),
        )
            .prop_map(
                |(chat_id, at, min_callers, lookback_minutes, max, follow)| {
                    Event::Settings {
                        chat_id,
                        at,
                        patch: Box::new(SettingsPatch {
                            min_callers,
                            lookback_minutes,
                            min_fdv_usd: max.map(|m| m / 2.0),
                            max_fdv_usd: max.map(|m| m + 1.0),
                            follow: follow.map(|s| s.into_iter().collect()),
                        }),
                    }
                }
            ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4_000))]

    #[test]
    fn arbitrary_bytes_never_panic_and_bad_lines_are_reported(
        bytes in prop::collection::vec(any::<u8>(), 0..300)
    ) {
        // The reader splits on newlines; a line never holds one.
        let line: Vec<u8> = bytes.into_iter().filter(|&b| b != b'\n').collect();
        check_line(&line);
    }

    #[test]
    fn mutated_good_lines_never_panic(which in 0..GOOD.len(), edits in edits()) {
        let mut line = GOOD[which].as_bytes().to_vec();
        for edit in edits {
            match edit {
                Edit::Flip(i, b) if !line.is_empty() => {
                    let n = line.len();
                    line[i % n] = b;
                }
                Edit::Insert(i, b) => line.insert(i % (line.len() + 1), b),
                Edit::Delete(i) if !line.is_empty() => {
                    let n = line.len();
                    line.remove(i % n);
                }
                _ => {}
            }
        }
        line.retain(|&b| b != b'\n');
        check_line(&line);
    }

    #[test]
    fn events_survive_a_write_parse_round_trip(event in events()) {
        let mut line = Vec::new();
        event.write_json(&mut line);
        let back = LineParser::new().parse(line.strip_suffix(b"\n").unwrap());
        prop_assert_eq!(back, Ok(event), "{}", String::from_utf8_lossy(&line));
    }
}

#[test]
fn the_good_lines_are_good() {
    let mut parser = LineParser::new();
    for line in GOOD {
        parser.parse(line.as_bytes()).unwrap();
    }
}
