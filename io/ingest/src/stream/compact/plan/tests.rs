//! The plan on streams made up here: the engine's chat state after the
//! compacted stream must equal the state after the full one, for every
//! chat and for what comes after.

use engine::chat::Chats;
use engine::time::format_rfc3339;
use redis::Value;

use super::*;

const SKEW: Nanos = 300 * 1_000_000_000;
const MS: Nanos = 1_000_000;
/// 2026-11-25T10:00:00Z, in ms.
const BASE_MS: u64 = 1_795_600_800_000;
const CHATS: [ChatId; 4] = [1, 2, -1003, 4];
const CHANNELS: [i64; 4] = [-1004, -1003, -1002, -1001];

type Stream = Vec<(EntryId, Vec<u8>)>;

/// SplitMix64: a seeded source of choices, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len() as u64) as usize]
    }

    fn maybe(&mut self) -> bool {
        self.below(2) == 0
    }
}

fn fields(line: &[u8]) -> Option<Vec<(Value, Value)>> {
    Some(vec![(
        Value::BulkString(b"event".to_vec()),
        Value::BulkString(line.to_vec()),
    )])
}

/// A settings line with some fields, perhaps an empty market value range.
fn settings(rng: &mut Rng, chat: ChatId, at: Nanos) -> String {
    let mut s = format!(
        r#"{{"type":"settings","at":"{}","chat_id":{chat}"#,
        format_rfc3339(at)
    );
    if rng.maybe() {
        s += &format!(r#","min_callers":{}"#, 1 + rng.below(5));
    }
    if rng.maybe() {
        s += &format!(r#","lookback_minutes":{}"#, 1 + rng.below(120));
    }
    if rng.below(3) == 0 {
        s += &format!(r#","min_fdv_usd":{}"#, rng.pick(&[0.0, 50e3, 500e3, 5e6]));
    }
    if rng.below(3) == 0 {
        s += &format!(r#","max_fdv_usd":{}"#, rng.pick(&[80e3, 1e6, 1e9]));
    }
    if rng.maybe() {
        let follow: Vec<String> = CHANNELS
            .iter()
            .filter(|_| rng.maybe())
            .map(i64::to_string)
            .collect();
        s += &format!(r#","follow":[{}]"#, follow.join(","));
    }
    s + "}"
}

/// One entry's line at `ms`: chat events mostly, and bad ones, events
/// dated ahead of their entry, and a token event that strayed here.
fn line(rng: &mut Rng, ms: u64) -> String {
    let at = ms as Nanos * MS - rng.below(60_000) as Nanos * MS;
    let chat = rng.pick(&CHATS);
    match rng.below(20) {
        0 => "{not json".to_owned(),
        1 => settings(rng, chat, at + 2 * SKEW),
        2 => format!(
            r#"{{"type":"call","at":"{}","token":"So11111111111111111111111111111111111111112","channel_id":-1001,"fdv_usd":5}}"#,
            format_rfc3339(at)
        ),
        3..=7 => format!(
            r#"{{"type":"subscribe","at":"{}","chat_id":{chat},"expires_at":"{}"}}"#,
            format_rfc3339(at),
            format_rfc3339(at + rng.below(100) as Nanos * 60_000 * MS)
        ),
        _ => settings(rng, chat, at),
    }
}

fn stream(rng: &mut Rng, len: usize) -> Stream {
    let mut ms = BASE_MS;
    let mut seq = 0;
    (0..len)
        .map(|_| {
            match rng.below(3) {
                0 => seq += 1,
                n => (ms, seq) = (ms + n * 1_000, 0),
            }
            (EntryId { ms, seq }, line(rng, ms).into_bytes())
        })
        .collect()
}

/// The stream after the plan's work, merged entries added at `now_ms`.
fn compacted(stream: &Stream, horizon: EntryId, now_ms: u64) -> Stream {
    let mut planner = Planner::new(horizon, SKEW);
    for (id, line) in stream {
        planner.entry(*id, fields(line));
    }
    let work = planner.finish(now_ms as Nanos * MS);
    let deleted: Vec<EntryId> = work.iter().flat_map(|w| w.delete.clone()).collect();
    let mut out: Stream = stream
        .iter()
        .filter(|(id, _)| !deleted.contains(id))
        .cloned()
        .collect();
    for (seq, line) in work.into_iter().filter_map(|w| w.line).enumerate() {
        let id = EntryId {
            ms: now_ms,
            seq: seq as u64,
        };
        out.push((id, line));
    }
    out
}

/// The engine's chats and ingest after reading `stream` as the reader does.
fn replay(stream: &Stream) -> (Chats, Ingest) {
    let (mut chats, mut ingest) = (Chats::default(), Ingest::new());
    for (id, line) in stream {
        let arrived = id.ms as Nanos * MS;
        match ingest.line_arrived(line, arrived, SKEW) {
            Outcome::Event(env) => match env.event {
                Event::Subscribe {
                    chat_id,
                    expires_at,
                    ..
                } => chats.subscribe(chat_id, expires_at),
                Event::Settings { chat_id, patch, .. } => chats.apply_settings(chat_id, &patch),
                _ => {}
            },
            Outcome::Bad { .. } | Outcome::Blank => {}
        }
    }
    (chats, ingest)
}

fn assert_same_state(full: &Stream, short: &Stream, context: &str) {
    let ((a, mut ia), (b, mut ib)) = (replay(full), replay(short));
    for chat in CHATS {
        let got = |c: &Chats| c.lookup(chat).map(|i| c.get(i).clone());
        assert_eq!(got(&a), got(&b), "chat {chat}, {context}");
        // What the ingest remembers judges later settings alike.
        for probe in [
            r#""min_fdv_usd":600000"#,
            r#""max_fdv_usd":60000"#,
            r#""min_fdv_usd":1e8"#,
        ] {
            let line = format!(
                r#"{{"type":"settings","at":"2026-11-25T10:00:00Z","chat_id":{chat},{probe}}}"#
            );
            let ok = |i: &mut Ingest| matches!(i.line(line.as_bytes()), Outcome::Event(_));
            assert_eq!(ok(&mut ia), ok(&mut ib), "chat {chat}, {probe}, {context}");
        }
    }
}

#[test]
fn a_compacted_stream_gives_the_engine_the_same_chats() {
    for seed in 0..300 {
        let mut rng = Rng(seed);
        let len = 1 + rng.below(300) as usize;
        let full = stream(&mut rng, len);
        let last = full.last().expect("an entry").0.ms;
        let horizon = EntryId {
            ms: BASE_MS + rng.below(last - BASE_MS + 2_000),
            seq: rng.below(3),
        };
        let short = compacted(&full, horizon, last + 1);
        assert_same_state(&full, &short, &format!("seed {seed}"));
        // Compacting again changes nothing more, in state.
        let again = compacted(&short, horizon, last + 2);
        assert_same_state(&full, &again, &format!("seed {seed}, twice"));
        // Beyond the horizon, a chat keeps one subscribe and one settings
        // entry at most; token events stay.
        let (old, _): (Stream, Stream) = short.iter().cloned().partition(|(id, _)| *id < horizon);
        for chat in CHATS {
            let mine = format!(r#""chat_id":{chat}"#);
            let n = old
                .iter()
                .filter(|(_, l)| String::from_utf8_lossy(l).contains(&mine))
                .count();
            assert!(n <= 2, "seed {seed}: chat {chat} keeps {n} old entries");
        }
    }
}

#[test]
fn settings_patches_become_one_entry_in_full_and_recent_ones_stay() {
    let at = |ms: u64| format_rfc3339(ms as Nanos * MS);
    let entry = |ms: u64, body: &str| {
        (
            EntryId { ms, seq: 0 },
            format!(
                r#"{{"type":"settings","at":"{}","chat_id":7,{body}}}"#,
                at(ms)
            )
            .into_bytes(),
        )
    };
    let full: Stream = vec![
        entry(BASE_MS, r#""min_callers":3"#),
        entry(BASE_MS + 1, r#""max_fdv_usd":1000000"#),
        entry(BASE_MS + 2, r#""follow":[-1002,-1001]"#),
        // Recent: kept; bad (its minimum above the maximum): kept too.
        entry(BASE_MS + 10, r#""min_fdv_usd":5000000"#),
        entry(BASE_MS + 11, r#""lookback_minutes":30"#),
    ];
    let horizon = EntryId {
        ms: BASE_MS + 10,
        seq: 0,
    };
    let short = compacted(&full, horizon, BASE_MS + 20);
    let lines: Vec<String> = short
        .iter()
        .map(|(_, l)| String::from_utf8_lossy(l).into_owned())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert_eq!(
        lines[..2],
        [&full[3].1, &full[4].1].map(|l| String::from_utf8_lossy(l))
    );
    assert_eq!(
        lines[2],
        format!(
            r#"{{"type":"settings","at":"{}","chat_id":7,"min_callers":3,"lookback_minutes":30,"min_fdv_usd":0.0,"max_fdv_usd":1000000.0,"follow":[-1002,-1001]}}"#,
            at(BASE_MS + 20)
        )
    );
    assert_same_state(&full, &short, "patches");
}

#[test]
fn only_a_later_good_subscribe_supersedes_and_bad_entries_go() {
    let sub = |ms: u64, expires: &str| {
        (
            EntryId { ms, seq: 0 },
            format!(
                r#"{{"type":"subscribe","at":"{}","chat_id":7,"expires_at":"{expires}"}}"#,
                format_rfc3339(ms as Nanos * MS)
            )
            .into_bytes(),
        )
    };
    let full: Stream = vec![
        sub(BASE_MS, "2027-01-01T00:00:00Z"),
        (EntryId { ms: BASE_MS + 1, seq: 0 }, b"{bad".to_vec()),
        sub(BASE_MS + 2, "2027-02-01T00:00:00Z"),
        // Dated a year ahead of its entry: bad, so it replaces nothing.
        (
            EntryId { ms: BASE_MS + 3, seq: 0 },
            br#"{"type":"subscribe","at":"2027-11-25T10:00:00Z","chat_id":7,"expires_at":"2028-01-01T00:00:00Z"}"#.to_vec(),
        ),
    ];
    let horizon = EntryId {
        ms: BASE_MS + 100,
        seq: 0,
    };
    let short = compacted(&full, horizon, BASE_MS + 200);
    let kept: Vec<EntryId> = short.iter().map(|(id, _)| *id).collect();
    assert_eq!(kept, [full[2].0]);
    assert_same_state(&full, &short, "subscribes");
}
