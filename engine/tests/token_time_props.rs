//! Property tests for `engine::token` and `engine::time`, checked against
//! independent implementations (bs58 and chrono) so that a shared blind spot
//! between the code and its hand-written unit tests cannot hide a bug.

use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use engine::time::{NANOS_PER_SEC, Nanos, TimeError, format_rfc3339, parse_rfc3339, write_rfc3339};
use engine::token::{Chain, Token, TokenError};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn solana_bytes_round_trip_through_bs58(bytes in any::<[u8; 32]>()) {
        let text = bs58::encode(bytes).into_string();
        let token = Token::parse(&text).unwrap();
        prop_assert_eq!(token.chain(), Chain::Solana);
        prop_assert_eq!(token.as_bytes(), &bytes[..]);
        prop_assert_eq!(token.to_string(), text.clone());
        let mut out = Vec::new();
        token.write_to(&mut out);
        prop_assert_eq!(out, text.into_bytes());
    }

    // Leading zero bytes are where base58 codecs usually go wrong, and
    // uniform bytes almost never produce them.
    #[test]
    fn solana_leading_zeros_round_trip(zeros in 0usize..=32, tail in any::<[u8; 32]>()) {
        let mut bytes = tail;
        bytes[..zeros].fill(0);
        let text = bs58::encode(bytes).into_string();
        let token = Token::parse(&text).unwrap();
        prop_assert_eq!(token.as_bytes(), &bytes[..]);
        prop_assert_eq!(token.to_string(), text);
    }

    #[test]
    fn evm_round_trips(bytes in any::<[u8; 20]>(), upper in any::<bool>(), big_x in any::<bool>()) {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let lower = format!("0x{hex}");
        let input = format!(
            "{}{}",
            if big_x { "0X" } else { "0x" },
            if upper { hex.to_ascii_uppercase() } else { hex.clone() }
        );
        let token = Token::parse(&input).unwrap();
        prop_assert_eq!(token.chain(), Chain::Evm);
        prop_assert_eq!(token.as_bytes(), &bytes[..]);
        prop_assert_eq!(token.to_string(), lower);
    }

    #[test]
    fn token_parse_never_panics(s in "\\PC{0,100}|.{0,100}") {
        let _ = Token::parse(&s);
    }

    #[test]
    fn token_parse_agrees_with_bs58(
        s in prop_oneof![
            "[1-9A-HJ-NP-Za-km-z]{0,100}",
            "[1-9A-HJ-NP-Za-km-z]{30,46}",
            "1{0,12}[1-9A-HJ-NP-Za-km-z]{28,44}",
        ]
    ) {
        let ours = Token::parse(&s);
        match bs58::decode(&s).into_vec() {
            Ok(bytes) if bytes.len() == 32 => {
                let token = ours.unwrap();
                prop_assert_eq!(token.as_bytes(), &bytes[..]);
                prop_assert_eq!(token.to_string(), s);
            }
            Ok(bytes) => {
                let expected = if s.is_empty() {
                    TokenError::Empty
                } else if s.len() > 64 {
                    TokenError::TooLong
                } else {
                    TokenError::WrongLength { decoded: bytes.len() }
                };
                prop_assert_eq!(ours, Err(expected));
            }
            Err(e) => prop_assert!(false, "bs58 rejected alphabet-only input: {e}"),
        }
    }

    #[test]
    fn time_round_trips_and_matches_chrono(t in any::<i64>()) {
        let text = format_rfc3339(t);
        prop_assert_eq!(parse_rfc3339(&text), Ok(t));

        let mut out = b"x".to_vec();
        write_rfc3339(t, &mut out);
        prop_assert_eq!(&out[1..], text.as_bytes());

        let dt = DateTime::<Utc>::from_timestamp_nanos(t);
        let secs = dt.to_rfc3339_opts(SecondsFormat::Secs, true);
        let nanos = dt.nanosecond();
        let expected = if nanos == 0 {
            secs
        } else {
            let fraction = format!("{nanos:09}");
            format!("{}.{}Z", &secs[..19], fraction.trim_end_matches('0'))
        };
        prop_assert_eq!(&text, &expected);
        prop_assert_eq!(
            DateTime::parse_from_rfc3339(&text).unwrap().timestamp_nanos_opt(),
            Some(t)
        );
    }

    #[test]
    fn time_parse_never_panics(s in "\\PC{0,60}|.{0,60}|[0-9:.TZz +-]{0,40}") {
        let _ = parse_rfc3339(&s);
    }

    #[test]
    fn time_parse_agrees_with_chrono(
        (year, month, day) in (prop_oneof![1600u32..2300, 0u32..10_000], 0u32..14, 0u32..33),
        (hour, minute, second) in (0u32..26, 0u32..62, 0u32..62),
        fraction in proptest::option::of("[0-9]{0,12}"),
        sep in prop_oneof![Just('T'), Just('t'), Just(' ')],
        offset in prop_oneof![
            Just("Z".to_owned()),
            Just("z".to_owned()),
            (prop_oneof![Just('+'), Just('-')], 0u32..26, 0u32..62)
                .prop_map(|(sign, h, m)| format!("{sign}{h:02}:{m:02}")),
        ],
    ) {
        let fraction_text = fraction.as_deref().map(|f| format!(".{f}")).unwrap_or_default();
        let s = format!(
            "{year:04}-{month:02}-{day:02}{sep}{hour:02}:{minute:02}:{second:02}{fraction_text}{offset}"
        );
        let ours = parse_rfc3339(&s);
        match DateTime::parse_from_rfc3339(&s) {
            // chrono accepts leap seconds and truncates past nine fraction
            // digits; we reject both on purpose.
            Ok(_) if second == 60 || fraction.as_ref().is_some_and(|f| f.len() > 9) => {
                prop_assert!(ours.is_err(), "{s:?} -> {ours:?}");
            }
            Ok(dt) => match dt.timestamp_nanos_opt() {
                Some(n) => prop_assert_eq!(ours, Ok(n), "{:?}", s),
                None => prop_assert_eq!(ours, Err(TimeError::OutOfRange), "{:?}", s),
            },
            Err(_) => prop_assert!(ours.is_err(), "{s:?} -> {ours:?}"),
        }
    }
}

#[test]
fn nanos_is_i64_and_second_is_a_billion() {
    let t: Nanos = NANOS_PER_SEC;
    assert_eq!(format_rfc3339(t), "1970-01-01T00:00:01Z");
}
