//! The web dashboard end to end, in a real browser: `callwatch serve` as a
//! process with calls and prices fed in, a link asked of the bot's
//! `/dashboard` through the fake Bot API, the pages loaded in headless
//! Chromium, and their DOM checked against what `/top` and `/tracked`
//! reply in the same run. Screenshots are kept under
//! `target/test-artifacts/`. A forged or expired link gets 403.
//!
//! Needs Chromium (`/usr/bin/chromium`, or `CALLWATCH_CHROMIUM`); without
//! it the test fails and says what to install (`scripts/test` installs it
//! when run as root). Uses the machine's Redis (database 8, a prefix of its
//! own) and PostgreSQL (a schema of its own).

mod common;

use std::time::{Duration, Instant};

use callwatch_dashboard::Signer;
use callwatch_ingest::stream::publish;
use callwatch_service::ops::get;
use callwatch_testkit::browser::Browser;
use callwatch_testkit::fake_bot::FakeBotApi;
use common::*;

const SECRET: &str = "a-dashboard-key-for-tests-only-0123456789";
const CHAT: i64 = 42;
const TOKEN_A: &str = "JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN";
const TOKEN_B: &str = "0x00000000000000000000000000000000000000aa";
/// A channel whose title is markup: it must show as text.
const SCRIPT_TITLE: &str = "<script>alert(1)</script>";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_in_a_browser_what_top_and_tracked_reply() {
    let browser = Browser::find(env!("CARGO_TARGET_TMPDIR"));
    let scratch = Scratch::new("dash");
    let (prefix, schema) = (scratch.prefix.clone(), scratch.schema.clone());
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    let config = config(&prefix, &schema, 2, &[], "one", Some(&fake.url()));
    let listen = listen_of(&config);
    let mut settings = std::fs::read_to_string(&config).unwrap();
    settings.push_str(&format!(
        "[dashboard]\nbase_url = \"http://{listen}\"\nsecret = \"{SECRET}\"\nlink_ttl_secs = 3600\n"
    ));
    std::fs::write(&config, settings).unwrap();

    let mut con = connect().await;
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}channel:-1001:info"))
        .arg(serde_json::json!({ "title": SCRIPT_TITLE }).to_string())
        .query_async(&mut con)
        .await
        .unwrap();
    let running = spawn_serve(&config);

    let r = command(&fake, ADMIN, ADMIN, &format!("/grant {CHAT} 1")).await;
    assert!(r.contains("Granted 1 day"), "{r}");
    let r = command(&fake, CHAT, CHAT, "/min_callers 1").await;
    assert!(r.contains("Done"), "{r}");

    // A: called by -1001 at $100K and -1002 at $120K, then $300K, then
    // $600K (last, so its 5x alert says every event before it is in). B:
    // called by -1003 at $50K, then $40K, then by -1001 at $45K. So -1001
    // has two calls (6x and 1x), -1002 one (5x), -1003 one (1x).
    let now = redis_clock_now();
    let at = |secs: i64| engine::time::format_rfc3339(now + secs * 1_000_000_000);
    let call = |token: &str, channel: i64, fdv: f64, secs: i64| {
        format!(
            r#"{{"type":"call","at":"{}","token":"{token}","channel_id":{channel},"fdv_usd":{fdv}}}"#,
            at(secs)
        )
    };
    let price = |token: &str, fdv: f64, secs: i64| {
        format!(
            r#"{{"type":"price","at":"{}","token":"{token}","fdv_usd":{fdv}}}"#,
            at(secs)
        )
    };
    // The calls first: a token's price history starts at its call alert,
    // so prices in the same batch as the call would find none yet.
    let calls = [
        call(TOKEN_A, -1001, 100_000.0, -6),
        call(TOKEN_A, -1002, 120_000.0, -5),
        call(TOKEN_B, -1003, 50_000.0, -4),
    ];
    publish(&mut con, &prefix, 2, &calls).await.unwrap();
    wait_for(&fake, TOKEN_B).await;
    let moves = [
        price(TOKEN_A, 300_000.0, -3),
        price(TOKEN_B, 40_000.0, -2),
        call(TOKEN_B, -1001, 45_000.0, -1),
        price(TOKEN_A, 600_000.0, 0),
    ];
    publish(&mut con, &prefix, 2, &moves).await.unwrap();
    wait_for(&fake, "5x").await;

    let tracked = command(&fake, CHAT, CHAT, "/tracked").await;
    let top = command(&fake, CHAT, CHAT, "/top").await;
    let reply = command(&fake, CHAT, CHAT, "/dashboard").await;
    let link = href(&reply);
    assert!(
        link.starts_with(&format!("http://{listen}/dashboard/{CHAT}?exp=")),
        "{reply}"
    );

    // The tracked page: every row of /tracked, with the same numbers.
    let dom = browser.dom(&link);
    let rows = table_rows(&dom, "tracked");
    assert_eq!(rows.len(), 2, "{dom}");
    for row in &rows {
        let short = text_of(row, "<code>");
        let line = format!(
            "{short}</a> {} → {} <b>{}</b>",
            cell(row, "at-call"),
            cell(row, "now"),
            text_of(row, "<b>")
        );
        assert!(
            tracked.contains(&line),
            "{line:?} not in /tracked:\n{tracked}"
        );
        assert!(row.contains("<svg class=\"spark\""), "{row}");
    }
    assert!(
        rows[0].contains(TOKEN_A) && rows[1].contains(TOKEN_B),
        "{dom}"
    );
    assert_eq!(cell(&rows[0], "reached"), "5x");
    // The sparklines draw the price history the alerts' charts keep: A's
    // call, its two prices; B's call and its one price, then its value now.
    assert!(
        rows[0].contains("aria-label=\"3 prices since the call, highest 6x, now 6x\""),
        "{}",
        rows[0]
    );
    assert!(
        rows[1].contains("aria-label=\"2 prices since the call, highest 1x, now 0.9x\""),
        "{}",
        rows[1]
    );
    browser.screenshot(&link, "dashboard-tracked", (1000, 640));
    browser.screenshot(&link, "dashboard-tracked-phone", (412, 915));

    // The leaderboard, as /top's: the same rows in the same order.
    let top_link = link.replacen('?', "/top?", 1);
    let dom = browser.dom(&top_link);
    let rows = table_rows(&dom, "top");
    assert_eq!(rows.len(), 3, "{dom}");
    let ranked = top
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()));
    assert_eq!(ranked.count(), rows.len(), "{top}");
    for row in &rows {
        let line = format!(
            "{}. {} (<code>{}</code>): {} · {} · {}",
            cell(row, "rank"),
            cell(row, "name"),
            text_of(row, "<code>"),
            cell(row, "calls"),
            cell(row, "share"),
            cell(row, "median")
        );
        assert!(top.contains(&line), "{line:?} not in /top:\n{top}");
    }
    // The markup in a channel's title is text on the page, not a script.
    assert_eq!(
        cell(&rows[1], "name"),
        "&lt;script&gt;alert(1)&lt;/script&gt;"
    );
    assert!(!dom.contains("<script"), "{dom}");
    browser.screenshot(&top_link, "dashboard-top", (1000, 640));
    browser.screenshot(&top_link, "dashboard-top-phone", (412, 915));

    // Its filters: channels with at least two calls, over a day.
    let filtered = format!("{top_link}&period=1d&min_calls=2");
    let dom = browser.dom(&filtered);
    let rows = table_rows(&dom, "top");
    assert_eq!(rows.len(), 1, "{dom}");
    assert_eq!(
        (
            cell(&rows[0], "calls"),
            cell(&rows[0], "share"),
            cell(&rows[0], "median")
        ),
        ("2".to_owned(), "50%".to_owned(), "3.5x".to_owned())
    );
    assert!(dom.contains("<option value=\"1d\" selected=\"\">"), "{dom}");

    // Health, as /readyz reports it.
    let dom = browser.dom(&link.replacen('?', "/health?", 1));
    assert!(dom.contains("id=\"status\" class=\"ready\""), "{dom}");
    assert!(dom.contains("<li>redis ok ("), "{dom}");

    // Refused: a forged signature, another chat, an expired link, none.
    let path = link.trim_start_matches(&format!("http://{listen}"));
    let ok = http_get(&listen, path).await;
    assert_eq!(ok.0, 200);
    let mut forged = path.to_owned().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).unwrap();
    let other = path.replacen(&format!("/{CHAT}?"), "/43?", 1);
    let exp = callwatch_common::clock::now() / 1_000_000_000 - 10;
    let expired = format!(
        "/dashboard/{CHAT}/top?exp={exp}&sig={}",
        Signer::new(SECRET.as_bytes()).sign(CHAT, exp)
    );
    for (what, path) in [
        ("forged", forged.as_str()),
        ("another chat", other.as_str()),
        ("expired", expired.as_str()),
        ("unsigned", "/dashboard/42"),
    ] {
        let (status, body) = http_get(&listen, path).await;
        assert_eq!(status, 403, "{what}: {body}");
        assert!(!body.contains(TOKEN_A), "{what}: {body}");
    }
    assert!(http_get(&listen, &expired).await.1.contains("expired"));
    assert_eq!(http_get(&listen, "/metrics").await.0, 200);

    let exit = stop(running).await;
    assert!(exit.success(), "{exit:?}");
    drop(scratch);
}

/// Waits for a message to the chat that contains `needle`.
async fn wait_for(fake: &FakeBotApi, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fake
        .received()
        .iter()
        .any(|m| m.chat_id == CHAT && m.text.contains(needle))
    {
        assert!(Instant::now() < deadline, "{:#?}", fake.received());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn http_get(listen: &str, path: &str) -> (u16, String) {
    let (listen, path) = (listen.to_owned(), path.to_owned());
    tokio::task::spawn_blocking(move || get(&listen, &path).unwrap())
        .await
        .unwrap()
}

/// The first link in a reply.
fn href(reply: &str) -> String {
    let at = reply.find("href=\"").expect("a link") + 6;
    let end = at + reply[at..].find('"').unwrap();
    reply[at..end].replace("&amp;", "&")
}

/// The rows of the body of the table with `id`, as HTML.
fn table_rows(dom: &str, id: &str) -> Vec<String> {
    let Some(at) = dom.find(&format!("<table id=\"{id}\">")) else {
        return Vec::new();
    };
    let table = &dom[at..at + dom[at..].find("</table>").unwrap()];
    let body = &table[table.find("<tbody>").unwrap()..];
    body.split("<tr")
        .skip(1)
        .map(|r| r[..r.find("</tr>").unwrap()].to_owned())
        .collect()
}

/// The text of the first cell of `class` (one of its classes) in `row`.
fn cell(row: &str, class: &str) -> String {
    let at = row
        .split("<td class=\"")
        .skip(1)
        .find(|c| c[..c.find('"').unwrap()].split(' ').any(|k| k == class))
        .unwrap_or_else(|| panic!("no cell {class} in {row}"));
    let text = &at[at.find('>').unwrap() + 1..at.find("</td>").unwrap()];
    strip_tags(text)
}

/// The text right after the first `tag` in `row`, to its closing tag.
fn text_of(row: &str, tag: &str) -> String {
    let at = row.find(tag).unwrap_or_else(|| panic!("no {tag} in {row}")) + tag.len();
    row[at..at + row[at..].find("</").unwrap()].to_owned()
}

fn strip_tags(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.trim().to_owned()
}
