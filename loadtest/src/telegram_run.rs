//! The `telegram` scenario: a backlog of call alerts through the Telegram
//! sender to the fake Bot API, which enforces Telegram's limits as
//! Telegram would (a message that would put more than the limit in any
//! window is answered 429).
//!
//! The alerts are real messages (rendered by `format::call_alert`, with
//! three to twelve calling channels, some named with characters to
//! escape), all queued at once, spread over the chats as a pump spreads
//! them. The figure is delivered messages per second over the steady state,
//! on the fake's clock: from the delivery that completes the first tenth to
//! the one that completes the ninth (the ramp-up and the tail, where only
//! the last chats are left, are outside it). The target is 95 % of the
//! global limit with not one 429.
//!
//! With `--shared-redis`, each send is reserved in the limits the bot's
//! processes share in Redis first, as `serve` does: the price of the
//! reservation shows beside a run without it.

use std::time::{Duration, Instant};

use anyhow::Context;
use callwatch_common::secret::SecretUrl;
use callwatch_streams::connection::{RedisTimeouts, managed_connection};
use callwatch_telegram::BotToken;
use callwatch_telegram::format::{self, Links};
use callwatch_telegram::sender::{
    Message, Report, Sender, SenderConfig, SenderStats, SharedLimits,
};
use callwatch_testkit::fake_bot::{Answer, FakeBotApi, Limits};
use engine::effect::{CallAlert, Effect};
use engine::sim::{self, Rng};
use indicatif::ProgressBar;

const TOKEN: &str = "1000000001:loadtest-token-not-a-secret";

#[derive(Debug, Clone)]
pub struct Plan {
    pub alerts: u64,
    pub chats: u64,
    /// Messages per second overall (the sender's limit and the fake's).
    pub global_limit: u32,
    /// Least time between two messages to one chat.
    pub chat_interval: Duration,
    /// The Redis the limits are shared in, if they are.
    pub shared_redis: Option<SecretUrl>,
    pub seed: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Results {
    pub alerts: u64,
    pub chats: u64,
    pub global_limit: u32,
    pub shared: bool,
    pub delivered: u64,
    /// Delivered per second over the steady state (first to ninth tenth).
    pub steady_per_sec: f64,
    /// Delivered per second from the first delivery to the last.
    pub overall_per_sec: f64,
    pub secs: f64,
    /// 429s the fake answered.
    pub too_many: u64,
    /// The most messages the fake received in any 1 s, overall and to one
    /// chat.
    pub max_per_window: usize,
    pub max_per_chat_window: usize,
    /// Longest message, in characters.
    pub longest_chars: usize,
    pub stats: SenderStats,
}

impl Results {
    pub fn target_met(&self) -> bool {
        self.too_many == 0 && self.steady_per_sec >= 0.95 * f64::from(self.global_limit)
    }
}

pub fn run(plan: &Plan) -> anyhow::Result<Results> {
    anyhow::ensure!(plan.alerts >= 10, "--alerts must be at least 10");
    anyhow::ensure!(plan.chats > 0, "--chats must be positive");
    anyhow::ensure!(plan.global_limit > 0, "--global-limit must be positive");
    anyhow::ensure!(
        !plan.chat_interval.is_zero(),
        "--chat-interval-ms must be positive"
    );
    // Two workers: the fake answers on one while the sender runs on the other.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(drive(plan))
}

async fn drive(plan: &Plan) -> anyhow::Result<Results> {
    let fake = FakeBotApi::start(TOKEN)
        .await
        .context("starting the fake Bot API")?;
    let window = Duration::from_secs(1);
    fake.enforce(Limits {
        // One per chat_interval is at most this many per window.
        per_chat: (window.as_nanos() / plan.chat_interval.as_nanos()).max(1) as usize,
        overall: plan.global_limit as usize,
        window,
    });
    let config = SenderConfig {
        api_url: fake.url(),
        chat_interval: plan.chat_interval,
        global_limit: plan.global_limit,
        window,
        alert_capacity: plan.alerts as usize,
        ..SenderConfig::default()
    };
    let token = BotToken::new(TOKEN);
    let (sender, mut reports, task) = match &plan.shared_redis {
        Some(url) => {
            let con = managed_connection(url.expose(), &RedisTimeouts::default())
                .context("--shared-redis")?;
            let prefix = format!("loadtest-telegram-{}:", std::process::id());
            let shared = SharedLimits::new(con, &prefix, &token);
            Sender::start_shared(token, config, shared)
        }
        None => Sender::start(token, config),
    }
    .context("starting the sender")?;

    let messages = alerts(plan);
    let longest_chars = messages
        .iter()
        .map(|m| m.text.chars().count())
        .max()
        .unwrap_or(0);
    let started = Instant::now();
    for m in messages {
        sender
            .try_send(m)
            .map_err(|e| anyhow::anyhow!("queueing: {e}"))?;
    }
    let pb = ProgressBar::new(plan.alerts);
    let mut done = 0;
    // Generous: the backlog needs alerts / limit seconds.
    let limit =
        Duration::from_secs_f64(plan.alerts as f64 / f64::from(plan.global_limit) * 2.0 + 60.0);
    while done < plan.alerts {
        let report = tokio::time::timeout(limit.saturating_sub(started.elapsed()), reports.recv())
            .await
            .context("the backlog did not drain in time")?
            .context("the sender stopped")?;
        match report {
            Report::Sent { .. } => {}
            other => anyhow::bail!("not sent: {other:?}"),
        }
        done += 1;
        if done % 64 == 0 {
            pb.set_position(done);
        }
    }
    pb.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let closed = task.close(Duration::from_secs(5)).await;
    anyhow::ensure!(
        closed.unsent.is_empty(),
        "{} left unsent",
        closed.unsent.len()
    );

    let mut times: Vec<Duration> = fake
        .received()
        .iter()
        .filter(|r| matches!(r.answer, Answer::Sent { .. }))
        .map(|r| r.at)
        .collect();
    times.sort();
    let delivered = times.len() as u64;
    let rate = |from: usize, to: usize| {
        let secs = (times[to] - times[from]).as_secs_f64();
        (to - from) as f64 / secs.max(1e-9)
    };
    let n = times.len();
    let worst = fake.max_in_window(window);
    Ok(Results {
        alerts: plan.alerts,
        chats: plan.chats,
        global_limit: plan.global_limit,
        shared: plan.shared_redis.is_some(),
        delivered,
        steady_per_sec: rate(n / 10, n * 9 / 10),
        overall_per_sec: rate(0, n - 1),
        secs,
        too_many: fake.too_many_requests(),
        max_per_window: worst.overall,
        max_per_chat_window: worst.per_chat,
        longest_chars,
        stats: closed.stats,
    })
}

/// Call alerts as a pump makes them: each token alerts a run of chats at
/// once, so every chat ends up with several, interleaved with the others'.
fn alerts(plan: &Plan) -> Vec<Message> {
    let mut rng = Rng::new(plan.seed);
    let links = Links::default();
    let channel_names = [
        Some("Alpha Calls"),
        Some("Gems & <Moonshots>"),
        None,
        Some("Degen \"Central\""),
        Some("Whale Watch"),
        None,
    ];
    let mut out = Vec::with_capacity(plan.alerts as usize);
    let mut token = sim::token(&mut rng);
    for i in 0..plan.alerts {
        if i % plan.chats == 0 {
            token = sim::token(&mut rng);
        }
        let callers: Vec<i64> = (0..3 + rng.below(10))
            .map(|c| -1_000_000 - c as i64)
            .collect();
        let names: Vec<Option<&str>> = callers
            .iter()
            .map(|c| channel_names[c.unsigned_abs() as usize % channel_names.len()])
            .collect();
        let effect = Effect::CallAlert(CallAlert {
            seq: i,
            chat_id: (i % plan.chats) as i64 + 1,
            token,
            at: i as i64,
            fdv_usd: 50_000.0 + rng.below(5_000_000) as f64,
            callers: callers.into(),
            channel_id: -1_000_000,
        });
        let rendered = format::alert(&effect, &names, &links).expect("an alert");
        out.push(Message::alert(&effect, rendered).expect("an alert"));
    }
    out
}

pub fn table(r: &Results) -> String {
    format!(
        "  alerts                   {} to {} chats, limit {}/s overall\n  \
         delivered                {} in {:.1} s\n  \
         steady state             {:.2} msg/s ({:.1} % of the limit)\n  \
         first to last            {:.2} msg/s\n  \
         429s from the fake       {}\n  \
         limits                   {}\n  \
         most in any 1 s          {} overall, {} to one chat\n  \
         longest message          {} characters\n  \
         target (95 %, no 429)    {}\n",
        r.alerts,
        r.chats,
        r.global_limit,
        r.delivered,
        r.secs,
        r.steady_per_sec,
        100.0 * r.steady_per_sec / f64::from(r.global_limit),
        r.overall_per_sec,
        r.too_many,
        if r.shared {
            format!(
                "shared in Redis ({} sends held back there)",
                r.stats.shared_waits
            )
        } else {
            "in process".to_owned()
        },
        r.max_per_window,
        r.max_per_chat_window,
        r.longest_chars,
        if r.target_met() { "met" } else { "NOT met" }
    )
}

pub fn json(r: &Results) -> String {
    serde_json::json!({
        "scenario": "telegram",
        "alerts": r.alerts,
        "chats": r.chats,
        "global_limit": r.global_limit,
        "delivered": r.delivered,
        "seconds": (r.secs * 1000.0).round() / 1000.0,
        "steady_msgs_per_sec": (r.steady_per_sec * 100.0).round() / 100.0,
        "overall_msgs_per_sec": (r.overall_per_sec * 100.0).round() / 100.0,
        "too_many_requests": r.too_many,
        "shared_limits": r.shared,
        "max_per_window": r.max_per_window,
        "max_per_chat_window": r.max_per_chat_window,
        "retries": r.stats.timeouts + r.stats.server_errors + r.stats.network_errors,
        "target_met": r.target_met(),
    })
    .to_string()
}
