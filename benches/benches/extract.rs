//! Address extraction from channel posts ([2.2]: at least 200,000 posts a
//! second on one core): a mix of posts as callers write them, with links,
//! emoji, code spans, several addresses, look-alikes and chatter with no
//! address: 122 bytes a post on average, up to a few hundred.
//!
//! Run: `cargo bench -p callwatch-benches --bench extract`

use std::hint::black_box;

use callwatch_sources::extract::{ExtractConfig, Extractor};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use engine::sim::{Rng, token};

/// `n` posts: a quarter chatter, the rest calls of one to three tokens in
/// the shapes of the extractor's corpus.
fn posts(n: usize) -> Vec<(String, Vec<String>)> {
    let mut rng = Rng::new(11);
    let chatter = [
        "GM frens ☀️ market looks hot today, NFA DYOR 🧠 we are so early, LFG!!!",
        "Reminder: never share your seed phrase. Admins will never DM you first. Stay safe 🙏",
        "Volume is insane on the majors today, taking profits on half the bag and riding the rest.",
    ];
    (0..n)
        .map(|i| {
            let a = token(&mut rng).to_string();
            let b = token(&mut rng).to_string();
            match i % 8 {
                0 | 1 => (chatter[i % 3].to_owned(), Vec::new()),
                2 => (
                    format!(
                        "🚀 NEW GEM 🚀\nCA: {a}\nLP burned ✅ mint revoked ✅ socials below 👇"
                    ),
                    Vec::new(),
                ),
                3 => (
                    format!("Ape in 👇\n`{a}`\nChart: https://dexscreener.com/solana/{a}"),
                    Vec::new(),
                ),
                4 => (
                    format!(
                        "Two plays today:\n1) {a}\n2) {b}\nboth under 100k mc, size accordingly"
                    ),
                    Vec::new(),
                ),
                5 => (
                    "Early call, chart below ⬇️ (not financial advice)".to_owned(),
                    vec![format!("https://birdeye.so/token/{a}?chain=solana")],
                ),
                6 => (
                    format!("whale wallet https://solscan.io/account/{a} just bought {b} 👀"),
                    Vec::new(),
                ),
                _ => (
                    format!(
                        "ETH play: 0x{}\nhttps://etherscan.io/token/0x{}",
                        &hex(&a),
                        &hex(&b)
                    ),
                    Vec::new(),
                ),
            }
        })
        .collect()
}

/// 40 hex digits from a string's bytes (a made-up EVM address).
fn hex(seed: &str) -> String {
    seed.bytes()
        .take(20)
        .map(|b| format!("{:02x}", b))
        .collect()
}

fn extract(c: &mut Criterion) {
    let extractor = Extractor::new(&ExtractConfig::default()).expect("the default config");
    let posts = posts(10_000);
    let bytes: usize = posts
        .iter()
        .map(|(t, l)| t.len() + l.iter().map(String::len).sum::<usize>())
        .sum();
    let mut group = c.benchmark_group("extract");
    group.throughput(Throughput::Elements(posts.len() as u64));
    group.bench_function(format!("{} posts, {} bytes", posts.len(), bytes), |b| {
        b.iter(|| {
            let mut calls = 0;
            for (text, links) in &posts {
                let links: Vec<&str> = links.iter().map(String::as_str).collect();
                calls += extractor.extract(black_box(text), &links).len();
            }
            black_box(calls)
        });
    });
    group.finish();
}

criterion_group!(benches, extract);
criterion_main!(benches);
