//! One test per command, with its bad arguments, against a backend that
//! keeps everything in memory.

use std::collections::HashMap;

use engine::board::ChannelScore;
use engine::shard::{Holding, TrackedView};
use engine::time::NANOS_PER_SEC;
use engine::token::Token;
use parking_lot::Mutex;

use super::*;
use crate::format::units;

const NOW: Nanos = 1_764_064_800 * NANOS_PER_SEC; // 2025-11-25T10:00:00Z
const DAY: Nanos = 24 * 3600 * NANOS_PER_SEC;
const CHAT: ChatId = 42;
const ADMIN: i64 = 7;
const SOL: &str = "So11111111111111111111111111111111111111112";

#[derive(Debug, Default)]
struct Fake {
    down: bool,
    settings: HashMap<ChatId, ChatSettings>,
    /// Every settings event recorded: (chat, patch, at).
    events: Vec<(ChatId, SettingsPatch, Nanos)>,
    subscription: Option<Subscription>,
    tracked: Vec<Holding>,
    board: Vec<ChannelScore>,
    board_since: Option<Nanos>,
    names: HashMap<ChannelId, String>,
    grants: Vec<(i64, ChatId, u32)>,
    /// The grant id of each grant, in order.
    grant_ids: Vec<String>,
    /// Credits are recorded, but not announced to the engine.
    announce_fails: bool,
    plans: Vec<PlanView>,
    unmatched: Vec<UnmatchedView>,
    resolved: Vec<(i64, String, ChatId, String)>,
    /// (group, user) → administers it; absent: a plain member.
    admins_of: HashMap<(ChatId, i64), bool>,
    /// Chats that turned charts off.
    charts_off: Vec<ChatId>,
    /// `is_chat_admin` calls, and whether Telegram is away for them.
    member_lookups: usize,
    members_down: bool,
    /// The dashboard's base URL; `None`: not set up.
    dashboard: Option<String>,
}

#[derive(Debug, Default)]
struct Mem(Mutex<Fake>);

impl Mem {
    fn check(&self) -> Result<(), BackendError> {
        if self.0.lock().down {
            Err(BackendError::Unavailable("connection refused".to_owned()))
        } else {
            Ok(())
        }
    }
}

impl Backend for Mem {
    async fn settings(&self, chat_id: ChatId) -> Result<ChatSettings, BackendError> {
        self.check()?;
        Ok(self
            .0
            .lock()
            .settings
            .get(&chat_id)
            .cloned()
            .unwrap_or_default())
    }

    async fn save_settings(
        &self,
        chat_id: ChatId,
        settings: &ChatSettings,
        patch: &SettingsPatch,
        now: Nanos,
    ) -> Result<(), BackendError> {
        self.check()?;
        let mut f = self.0.lock();
        f.settings.insert(chat_id, settings.clone());
        f.events.push((chat_id, patch.clone(), now));
        Ok(())
    }

    async fn charts(&self, chat_id: ChatId) -> Result<bool, BackendError> {
        self.check()?;
        Ok(!self.0.lock().charts_off.contains(&chat_id))
    }

    async fn set_charts(&self, chat_id: ChatId, on: bool) -> Result<(), BackendError> {
        self.check()?;
        let mut f = self.0.lock();
        f.charts_off.retain(|&c| c != chat_id);
        if !on {
            f.charts_off.push(chat_id);
        }
        Ok(())
    }

    async fn subscription(&self, _: ChatId) -> Result<Option<Subscription>, BackendError> {
        self.check()?;
        Ok(self.0.lock().subscription.clone())
    }

    async fn tracked(&self, _: ChatId) -> Result<Vec<Holding>, BackendError> {
        self.check()?;
        Ok(self.0.lock().tracked.clone())
    }

    async fn leaderboard(
        &self,
        window: Nanos,
        now: Nanos,
        limit: usize,
    ) -> Result<Vec<ChannelScore>, BackendError> {
        self.check()?;
        let mut f = self.0.lock();
        f.board_since = Some(now - window);
        Ok(f.board.iter().take(limit).cloned().collect())
    }

    fn dashboard_link(&self, chat_id: ChatId, now: Nanos) -> Result<DashboardLink, BackendError> {
        let Some(base) = self.0.lock().dashboard.clone() else {
            return Err(BackendError::Refused(
                "The dashboard is not set up on this bot.".to_owned(),
            ));
        };
        Ok(DashboardLink {
            url: format!("{base}/dashboard/{chat_id}?exp=1&sig=a&b"),
            expires_at: now + DAY,
        })
    }

    async fn names(&self, ids: &[ChannelId]) -> Vec<Option<String>> {
        let f = self.0.lock();
        ids.iter().map(|i| f.names.get(i).cloned()).collect()
    }

    async fn grant(
        &self,
        admin: i64,
        grant_id: &str,
        chat_id: ChatId,
        days: u32,
        now: Nanos,
    ) -> Result<Applied, BackendError> {
        self.check()?;
        let mut f = self.0.lock();
        if !f.grant_ids.iter().any(|g| g == grant_id) {
            f.grants.push((admin, chat_id, days));
            f.grant_ids.push(grant_id.to_owned());
        }
        Ok(Applied {
            expires_at: now + i64::from(days) * DAY,
            announced: !f.announce_fails,
        })
    }

    async fn stats(&self) -> Result<Vec<(String, String)>, BackendError> {
        self.check()?;
        Ok(vec![
            ("tracked keys".to_owned(), "1234".to_owned()),
            ("<b>".to_owned(), "x&y".to_owned()),
        ])
    }

    fn plans(&self) -> Vec<PlanView> {
        self.0.lock().plans.clone()
    }

    async fn quote(
        &self,
        chat_id: ChatId,
        plan: &str,
        now: Nanos,
    ) -> Result<QuoteView, BackendError> {
        self.check()?;
        let f = self.0.lock();
        let p = f.plans.iter().find(|p| p.name == plan).ok_or_else(|| {
            BackendError::Refused(format!(
                "There is no plan \"{plan}\"; /subscribe lists them."
            ))
        })?;
        Ok(QuoteView {
            plan: p.name.clone(),
            days: p.days,
            amount_sol: p.price_sol.clone(),
            address: "Recv1111111111111111111111111111111111111111".to_owned(),
            reference: format!("Ref{chat_id}"),
            expires_at: now + 30 * 60 * NANOS_PER_SEC,
            pay_url: format!("solana:Recv?amount={}&reference=Ref{chat_id}", p.price_sol),
        })
    }

    async fn unmatched(&self) -> Result<Vec<UnmatchedView>, BackendError> {
        self.check()?;
        Ok(self.0.lock().unmatched.clone())
    }

    async fn resolve(
        &self,
        admin: i64,
        signature: &str,
        chat_id: ChatId,
        plan: &str,
        now: Nanos,
    ) -> Result<Applied, BackendError> {
        self.check()?;
        self.resolve_one(admin, signature, chat_id, plan)?;
        Ok(Applied {
            expires_at: now + 30 * DAY,
            announced: !self.0.lock().announce_fails,
        })
    }

    async fn is_chat_admin(&self, chat_id: ChatId, user_id: i64) -> Result<bool, BackendError> {
        let mut f = self.0.lock();
        f.member_lookups += 1;
        if f.members_down {
            return Err(BackendError::Unavailable("getChatMember: 502".to_owned()));
        }
        Ok(f.admins_of.get(&(chat_id, user_id)) == Some(&true))
    }
}

impl Mem {
    fn resolve_one(
        &self,
        admin: i64,
        signature: &str,
        chat_id: ChatId,
        plan: &str,
    ) -> Result<(), BackendError> {
        let mut f = self.0.lock();
        let Some(i) = f.unmatched.iter().position(|u| u.signature == signature) else {
            return Err(BackendError::Refused(format!(
                "No unmatched payment has the signature {signature}."
            )));
        };
        f.unmatched.remove(i);
        f.resolved
            .push((admin, signature.to_owned(), chat_id, plan.to_owned()));
        Ok(())
    }
}

fn bot() -> Commands<Mem> {
    Commands::new(
        Mem::default(),
        vec![ADMIN],
        Some("callwatch_bot".to_owned()),
    )
}

/// A bot whose chat has a subscription for another 30 days: settings
/// commands are for subscribed chats.
fn subscribed_bot() -> Commands<Mem> {
    let c = bot();
    subscribe_until(&c, NOW + 30 * DAY);
    c
}

fn subscribe_until(c: &Commands<Mem>, expires_at: Nanos) {
    c.backend().0.lock().subscription = Some(Subscription {
        plan: "month".to_owned(),
        expires_at,
    });
}

fn ask_as(c: &Commands<Mem>, user: i64, text: &str) -> Option<Reply> {
    ask_in(c, CHAT, user, text)
}

fn ask_in(c: &Commands<Mem>, chat_id: ChatId, user: i64, text: &str) -> Option<Reply> {
    let req = Incoming {
        chat_id,
        user_id: Some(user),
        sender_chat_id: None,
        message_id: 1,
        text: text.to_owned(),
    };
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(c.handle(&req, NOW))
        .map(|(_, reply)| reply)
}

fn ask(c: &Commands<Mem>, text: &str) -> String {
    ask_as(c, CHAT, text).expect("a reply").text
}

/// A message in `chat`, from `user` (on behalf of `sender_chat`, if any).
fn message(chat: ChatId, user: Option<i64>, sender_chat: Option<ChatId>, text: &str) -> Incoming {
    Incoming {
        chat_id: chat,
        user_id: user,
        sender_chat_id: sender_chat,
        message_id: 1,
        text: text.to_owned(),
    }
}

fn reply_at(c: &Commands<Mem>, req: &Incoming, now: Nanos) -> String {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(c.handle(req, now))
        .expect("a reply")
        .1
        .text
}

fn reply(c: &Commands<Mem>, req: &Incoming) -> String {
    reply_at(c, req, NOW)
}

fn events(c: &Commands<Mem>) -> Vec<(ChatId, SettingsPatch, Nanos)> {
    c.backend().0.lock().events.clone()
}

fn holding(token: &str, at_call: f64, now: f64) -> Holding {
    Holding {
        tracked: TrackedView {
            token: Token::parse(token).expect("token"),
            chat_id: CHAT,
            fdv_at_call: at_call,
            started: NOW - DAY,
            last_threshold: None,
        },
        fdv_usd: now,
    }
}

#[test]
fn text_that_is_not_a_command_gets_no_reply_and_another_bots_command_neither() {
    let c = bot();
    assert_eq!(ask_as(&c, CHAT, "hello there"), None);
    assert_eq!(ask_as(&c, CHAT, "/status@other_bot"), None);
    assert!(ask(&c, "/status@CallWatch_Bot").contains("Status"));
}

#[test]
fn start_welcomes_and_points_to_subscribe_or_shows_the_expiry() {
    let c = bot();
    let r = ask(&c, "/start");
    assert!(
        r.contains("Welcome") && r.contains("/subscribe") && r.contains("/min_callers N"),
        "{r}"
    );
    c.backend().0.lock().subscription = Some(Subscription {
        plan: "month".to_owned(),
        expires_at: NOW + 3 * DAY,
    });
    let r = ask(&c, "/start");
    assert!(r.contains("runs until 2025-11-28 10:00 UTC"), "{r}");
    assert!(ask(&c, "/start now").contains("takes no arguments"));
}

#[test]
fn help_lists_every_user_command_and_escapes_its_usage() {
    let r = ask(&bot(), "/help");
    for cmd in [
        "/status",
        "/settings",
        "/min_callers",
        "/lookback",
        "/mcap",
        "/follow",
        "/unfollow",
        "/following",
        "/charts on|off",
        "/tracked",
        "/top",
        "/dashboard",
        "/subscribe",
    ] {
        assert!(r.contains(cmd), "{cmd} missing: {r}");
    }
    assert!(
        r.contains("/follow CHANNEL…") && !r.contains("/grant"),
        "{r}"
    );
    let r = ask_as(&bot(), ADMIN, "/help").expect("reply").text;
    for cmd in [
        "/grant CHAT DAYS",
        "/stats",
        "/unmatched",
        "/resolve SIGNATURE CHAT PLAN",
    ] {
        assert!(r.contains(cmd), "{cmd} missing for an admin: {r}");
    }
}

#[test]
fn unknown_commands_get_pointed_to_help_with_the_name_escaped() {
    let r = ask(&bot(), "/<b>oops");
    assert!(
        r.contains("I don't know /&lt;b&gt;oops") && r.contains("/help"),
        "{r}"
    );
}

#[test]
fn status_shows_subscription_settings_and_the_number_tracked() {
    let c = bot();
    c.backend().0.lock().tracked = vec![holding(SOL, 100.0, 250.0)];
    let r = ask(&c, "/status");
    assert!(r.contains("Subscription: none"), "{r}");
    assert!(
        r.contains("Callers needed: 2") && r.contains("Lookback: 60 minutes"),
        "{r}"
    );
    assert!(
        r.contains("Market value: any") && r.contains("every channel"),
        "{r}"
    );
    assert!(r.contains("Tracked tokens: 1"), "{r}");
    assert!(
        r.contains(&format!("This chat's id: <code>{CHAT}</code>")),
        "{r}"
    );
    c.backend().0.lock().subscription = Some(Subscription {
        plan: "week".to_owned(),
        expires_at: NOW + 5 * DAY,
    });
    assert!(ask(&c, "/status").contains("<b>week</b>, until 2025-11-30 10:00 UTC (5 days left)"));
    c.backend().0.lock().subscription = Some(Subscription {
        plan: "week".to_owned(),
        expires_at: NOW - DAY,
    });
    assert!(ask(&c, "/status").contains("expired 2025-11-24"));
}

#[test]
fn settings_shows_every_setting_and_how_to_change_it() {
    let c = subscribed_bot();
    ask(&c, "/mcap 50k 5m");
    ask(&c, "/follow -1001 -1002");
    let r = ask(&c, "/settings");
    assert!(
        r.contains("from $50K to $5M") && r.contains("Channels: 2 (/following)"),
        "{r}"
    );
    assert!(
        r.contains("/min_callers, /lookback, /mcap, /follow, /unfollow and /charts"),
        "{r}"
    );
}

#[test]
fn min_callers_becomes_a_settings_event_and_bad_values_are_explained() {
    let c = subscribed_bot();
    assert!(ask(&c, "/min_callers 3").contains("3 of your channels have"));
    assert_eq!(
        events(&c),
        vec![(
            CHAT,
            SettingsPatch {
                min_callers: Some(3),
                ..SettingsPatch::default()
            },
            NOW
        )]
    );
    for bad in [
        "/min_callers",
        "/min_callers 0",
        "/min_callers 101",
        "/min_callers two",
        "/min_callers 2 3",
        "/min_callers -1",
    ] {
        let r = ask(&c, bad);
        assert!(
            r.contains("Usage: <code>/min_callers N</code>"),
            "{bad}: {r}"
        );
    }
    assert_eq!(events(&c).len(), 1, "bad arguments change nothing");
}

#[test]
fn lookback_becomes_a_settings_event_and_bad_values_are_explained() {
    let c = subscribed_bot();
    assert!(ask(&c, "/lookback 2880").contains("last 2 days"));
    assert_eq!(events(&c)[0].1.lookback_minutes, Some(2880));
    for bad in [
        "/lookback",
        "/lookback 0",
        "/lookback 10081",
        "/lookback 1.5",
        "/lookback x",
    ] {
        assert!(
            ask(&c, bad).contains("Usage: <code>/lookback MINUTES</code>"),
            "{bad}"
        );
    }
    assert_eq!(events(&c).len(), 1);
}

#[test]
fn charts_turn_off_and_on_and_show_what_they_are() {
    let c = bot();
    assert!(ask(&c, "/charts").contains("come with a chart"));
    assert!(ask(&c, "/settings").contains("Charts in multiplier alerts: on"));
    assert!(ask(&c, "/charts OFF").starts_with("Done: multiplier alerts come as text"));
    assert_eq!(c.backend().0.lock().charts_off, vec![CHAT]);
    assert!(ask(&c, "/charts").contains("come as text"));
    assert!(ask(&c, "/settings").contains("Charts in multiplier alerts: off"));
    assert!(ask(&c, "/charts on").starts_with("Done: multiplier alerts come with a chart"));
    assert!(c.backend().0.lock().charts_off.is_empty());
    for bad in ["/charts maybe", "/charts on off"] {
        assert!(
            ask(&c, bad).contains("Usage: <code>/charts on</code>"),
            "{bad}"
        );
    }
    assert!(events(&c).is_empty(), "not an engine setting");
}

#[test]
fn mcap_takes_suffixes_and_any_and_refuses_an_empty_range() {
    let c = subscribed_bot();
    assert!(ask(&c, "/mcap 50k 1.5M").contains("from $50K to $1.5M"));
    assert_eq!(events(&c)[0].1.min_fdv_usd, Some(50_000.0));
    assert_eq!(events(&c)[0].1.max_fdv_usd, Some(1_500_000.0));
    assert!(ask(&c, "/mcap $100k any").contains("from $100K up"));
    let last = events(&c).pop().expect("event").1;
    assert_eq!(
        last.max_fdv_usd,
        Some(f64::MAX),
        "unbounded is the largest finite value"
    );
    assert_eq!(c.backend().0.lock().settings[&CHAT].max_fdv_usd, None);
    let r = ask(&c, "/mcap 5m 50k");
    assert!(
        r.contains("minimum ($5M) is above the maximum ($50K)"),
        "{r}"
    );
    for bad in [
        "/mcap",
        "/mcap 5",
        "/mcap x 5",
        "/mcap -1 5",
        "/mcap 0 0",
        "/mcap 1 2 3",
        "/mcap nan 1",
    ] {
        assert!(
            ask(&c, bad).contains("Usage: <code>/mcap MIN MAX</code>"),
            "{bad}"
        );
    }
    assert_eq!(events(&c).len(), 2);
}

#[test]
fn follow_adds_to_the_list_and_follow_all_clears_it() {
    let c = subscribed_bot();
    c.backend()
        .0
        .lock()
        .names
        .insert(-1002, "Alpha <Calls>".to_owned());
    let r = ask(&c, "/follow -1002");
    assert!(
        r.contains("You followed every channel")
            && r.contains("Alpha &lt;Calls&gt; (<code>-1002</code>)"),
        "{r}"
    );
    let r = ask(&c, "/follow -1001 -1002 -1003");
    assert!(r.contains("You follow 3 channels"), "{r}");
    let follows: Vec<_> = events(&c).iter().map(|e| e.1.follow.clone()).collect();
    assert_eq!(
        follows,
        vec![Some(vec![-1002]), Some(vec![-1003, -1002, -1001])]
            .into_iter()
            .map(|f| f.map(|mut v: Vec<i64>| {
                v.sort_unstable();
                v
            }))
            .collect::<Vec<_>>()
    );
    assert!(ask(&c, "/follow all").contains("every channel"));
    assert_eq!(events(&c).last().expect("event").1.follow, Some(Vec::new()));
    let r = ask(&c, "/follow @alphacalls");
    assert!(r.contains("numeric id"), "{r}");
    for bad in ["/follow", "/follow 0", "/follow abc", "/follow 1 x"] {
        assert!(
            ask(&c, bad).contains("Usage: <code>/follow CHANNEL…</code>"),
            "{bad}"
        );
    }
    assert_eq!(events(&c).len(), 3);
}

#[test]
fn follow_refuses_a_list_over_the_cap() {
    let c = subscribed_bot();
    let many: Vec<String> = (1..=MAX_FOLLOW as i64).map(|i| (-i).to_string()).collect();
    ask(&c, &format!("/follow {}", many.join(" ")));
    assert_eq!(
        c.backend().0.lock().settings[&CHAT].follow.len(),
        MAX_FOLLOW
    );
    let r = ask(&c, "/follow -999999");
    assert!(r.contains("at most 500"), "{r}");
    let r = ask(&c, &format!("/follow {} -1", many.join(" ")));
    assert!(r.contains("At most 500"), "{r}");
}

#[test]
fn unfollow_removes_and_refuses_what_it_cannot_express() {
    let c = subscribed_bot();
    assert!(ask(&c, "/unfollow -1001").contains("You follow every channel"));
    ask(&c, "/follow -1001 -1002");
    assert!(ask(&c, "/unfollow -1005").contains("did not follow any"));
    let r = ask(&c, "/unfollow -1001");
    assert!(
        r.contains("You follow 1 channel:") && r.contains("-1002"),
        "{r}"
    );
    assert_eq!(
        events(&c).last().expect("event").1.follow,
        Some(vec![-1002])
    );
    assert!(ask(&c, "/unfollow -1002").contains("would leave no channel"));
    assert!(ask(&c, "/unfollow").contains("Usage: <code>/unfollow CHANNEL…</code>"));
    assert!(ask(&c, "/unfollow all").contains("is not a channel id"));
    assert_eq!(events(&c).len(), 2);
}

#[test]
fn following_lists_names_or_says_every_channel() {
    let c = subscribed_bot();
    assert!(ask(&c, "/following").contains("You follow every channel"));
    c.backend().0.lock().names.insert(-1001, "Gems".to_owned());
    ask(&c, "/follow -1001 -1002");
    let r = ask(&c, "/following");
    assert!(
        r.contains("• -1002") && r.contains("• Gems (<code>-1001</code>)"),
        "{r}"
    );
    assert!(ask(&c, "/following x").contains("takes no arguments"));
}

#[test]
fn tracked_lists_tokens_by_multiple_with_links() {
    let c = bot();
    assert!(ask(&c, "/tracked").contains("Nothing is tracked"));
    let evm = "0x00000000000000000000000000000000000000aa";
    c.backend().0.lock().tracked = vec![
        holding(SOL, 100_000.0, 150_000.0),
        holding(evm, 50_000.0, 600_000.0),
    ];
    let r = ask(&c, "/tracked");
    let first = r.find("0x0000…00aa").expect("evm row");
    let second = r.find("So1111…1112").expect("sol row");
    assert!(first < second, "highest multiple first: {r}");
    assert!(
        r.contains("$50K → $600K <b>12x</b>") && r.contains("<b>1.5x</b>"),
        "{r}"
    );
    assert!(r.contains("href=\"https://"), "{r}");
}

#[test]
fn tracked_caps_its_list_and_counts_the_rest() {
    let c = bot();
    let tokens: Vec<String> = (0..TRACKED_ROWS + 5)
        .map(|i| format!("0x{i:040x}"))
        .collect();
    c.backend().0.lock().tracked = tokens.iter().map(|t| holding(t, 1.0, 2.0)).collect();
    let r = ask(&c, "/tracked");
    assert!(r.contains("…and 5 more.") && units(&r) < 4096, "{r}");
}

#[test]
fn top_ranks_channels_over_seven_days_with_names() {
    let c = bot();
    assert!(ask(&c, "/top").contains("No calls in the last 7 days"));
    {
        let mut f = c.backend().0.lock();
        f.names.insert(-1001, "Gems & Co".to_owned());
        f.board = vec![
            ChannelScore {
                channel_id: -1001,
                calls: 12,
                reached_2x: 9,
                median_peak: 3.5,
            },
            ChannelScore {
                channel_id: -1002,
                calls: 4,
                reached_2x: 1,
                median_peak: 1.5,
            },
        ];
    }
    let r = ask(&c, "/top");
    assert!(
        r.contains("1. Gems &amp; Co (<code>-1001</code>): 12 · 75% · 3.5x"),
        "{r}"
    );
    assert!(
        r.contains("2. -1002 (<code>-1002</code>): 4 · 25% · 1.5x"),
        "{r}"
    );
    assert_eq!(c.backend().0.lock().board_since, Some(NOW - 7 * DAY));
}

#[test]
fn dashboard_links_the_chats_pages_with_their_expiry() {
    let c = bot();
    assert!(ask(&c, "/dashboard").contains("not set up"));
    c.backend().0.lock().dashboard = Some("https://cw.example.com".to_owned());
    let r = ask(&c, "/dashboard");
    assert!(
        r.contains(
            "<a href=\"https://cw.example.com/dashboard/42?exp=1&amp;sig=a&amp;b\">\
             https://cw.example.com/dashboard/42?exp=1&amp;sig=a&amp;b</a>"
        ),
        "{r}"
    );
    assert!(
        r.contains("works for 24 hours, until 2025-11-26 10:00 UTC"),
        "{r}"
    );
    assert!(ask(&c, "/dashboard now").contains("takes no arguments"));
}

#[test]
fn subscribe_lists_plans_and_quotes_one_with_its_wallet_link() {
    let c = bot();
    assert!(ask(&c, "/subscribe").contains("not open yet"));
    c.backend().0.lock().plans = vec![PlanView {
        name: "week".to_owned(),
        days: 7,
        price_sol: "0.25".to_owned(),
    }];
    let r = ask(&c, "/subscribe");
    assert!(
        r.contains("<b>week</b>: 7 days for 0.25 SOL")
            && r.contains("<code>/subscribe week</code>"),
        "{r}"
    );
    let reply = ask_as(&c, CHAT, "/subscribe WEEK").expect("reply");
    assert!(
        reply.text.contains("Send exactly 0.25 SOL") && reply.text.contains("<code>Ref42</code>"),
        "{}",
        reply.text
    );
    assert!(
        reply.text.contains("valid until 2025-11-25 10:30 UTC"),
        "{}",
        reply.text
    );
    assert!(
        reply
            .text
            .contains("<code>solana:Recv?amount=0.25&amp;reference=Ref42</code>"),
        "{}",
        reply.text
    );
    assert!(ask(&c, "/subscribe year").contains("There is no plan &quot;year&quot;"));
    assert!(ask(&c, "/subscribe a b").contains("Usage"));
}

#[test]
fn grant_is_for_admins_and_checks_its_arguments() {
    let c = bot();
    let r = ask_as(&c, CHAT, "/grant 99 30").expect("reply").text;
    assert!(r.contains("for the bot's admins"), "{r}");
    assert!(c.backend().0.lock().grants.is_empty());
    let r = ask_as(&c, ADMIN, "/grant 99 30").expect("reply").text;
    assert!(
        r.contains("Granted 30 days to <code>99</code>: subscribed until 2025-12-25 10:00 UTC"),
        "{r}"
    );
    assert_eq!(c.backend().0.lock().grants, vec![(ADMIN, 99, 30)]);
    for bad in [
        "/grant",
        "/grant 99",
        "/grant 0 30",
        "/grant x 30",
        "/grant 99 0",
        "/grant 99 3651",
        "/grant 99 -3",
    ] {
        let r = ask_as(&c, ADMIN, bad).expect("reply").text;
        assert!(
            r.contains("Usage: <code>/grant CHAT DAYS</code>"),
            "{bad}: {r}"
        );
    }
    assert_eq!(c.backend().0.lock().grants.len(), 1);
}

#[test]
fn stats_is_for_admins_and_escapes_its_rows() {
    let c = bot();
    assert!(ask(&c, "/stats").contains("for the bot's admins"));
    let r = ask_as(&c, ADMIN, "/stats").expect("reply").text;
    assert!(
        r.contains("tracked keys: <b>1234</b>") && r.contains("&lt;b&gt;: <b>x&amp;y</b>"),
        "{r}"
    );
}

#[test]
fn an_unavailable_backend_gets_an_apology_not_a_crash_and_saves_nothing() {
    let c = bot();
    c.backend().0.lock().down = true;
    for cmd in [
        "/status",
        "/settings",
        "/min_callers 3",
        "/follow -1",
        "/tracked",
        "/top",
    ] {
        assert!(ask(&c, cmd).contains("try again in a minute"), "{cmd}");
    }
    assert!(events(&c).is_empty());
}

#[test]
fn replies_stay_under_telegrams_limit_for_the_longest_lists() {
    let c = subscribed_bot();
    let long = "x".repeat(200);
    {
        let mut f = c.backend().0.lock();
        for i in 1..=MAX_FOLLOW as i64 {
            f.names.insert(-i, long.clone());
        }
    }
    let many: Vec<String> = (1..=MAX_FOLLOW as i64).map(|i| (-i).to_string()).collect();
    ask(&c, &format!("/follow {}", many.join(" ")));
    let r = ask(&c, "/following");
    assert!(units(&r) <= 4096, "{} units", units(&r));
}

#[test]
fn unmatched_and_resolve_are_for_admins_and_credit_the_named_payment() {
    let c = bot();
    let sig = "5".repeat(88);
    c.backend().0.lock().unmatched = vec![UnmatchedView {
        signature: sig.clone(),
        reason: "underpaid: 0.000000001 SOL of 0.000000002 SOL".to_owned(),
        received_sol: "0.2".to_owned(),
        chat_id: Some(42),
    }];
    assert!(ask(&c, "/unmatched").contains("for the bot's admins"));
    assert!(ask(&c, &format!("/resolve {sig} 42 week")).contains("for the bot's admins"));
    let r = ask_as(&c, ADMIN, "/unmatched").expect("reply").text;
    assert!(
        r.contains(&format!(
            "<code>{sig}</code>\n0.2 SOL, underpaid: 0.000000001 SOL of 0.000000002 SOL, quote of chat <code>42</code>"
        )),
        "{r}"
    );
    let r = ask_as(&c, ADMIN, &format!("/resolve {sig} 42 WEEK"))
        .expect("reply")
        .text;
    assert!(
        r.contains("Credited to <code>42</code> as week: subscribed until 2025-12-25 10:00 UTC"),
        "{r}"
    );
    assert_eq!(
        c.backend().0.lock().resolved,
        vec![(ADMIN, sig.clone(), 42, "week".to_owned())]
    );
    let r = ask_as(&c, ADMIN, &format!("/resolve {sig} 42 week"))
        .expect("reply")
        .text;
    assert!(r.contains("No unmatched payment"), "{r}");
    assert!(
        ask_as(&c, ADMIN, "/unmatched")
            .expect("reply")
            .text
            .contains("No unmatched payments.")
    );
    for bad in [
        "/resolve",
        "/resolve short 42 week",
        &format!("/resolve {sig} x week"),
        &format!("/resolve {sig} 42"),
    ] {
        let r = ask_as(&c, ADMIN, bad).expect("reply").text;
        assert!(
            r.contains("Usage: <code>/resolve SIGNATURE CHAT PLAN</code>"),
            "{bad}: {r}"
        );
    }
}

mod credits;
mod rights;
mod subscribed;
