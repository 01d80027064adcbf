//! Token addresses in a channel post: pure, no I/O, no allocation per
//! candidate beyond the result.
//!
//! A post calls a token by its address, in the text or in a link to where
//! it trades. The rules, in order:
//!
//! - The text is split into words at white space. A word that is a URL (a
//!   scheme, `www.`, or a host and a path) is read as a link, and so is
//!   every link the post carries apart from its text (Telegram's
//!   `text_link` entities, a reader's link list).
//! - A link names a token only on the sites callers use, and only where
//!   the site puts a token: DexScreener (`/{chain}/{address}`), Birdeye
//!   (`/token/{address}?chain=…`, `/{chain}/token/{address}`), pump.fun,
//!   Jupiter (`/swap/{a}-{b}`, `/tokens/{address}`), GMGN, Solscan's
//!   `/token/`, and the EVM explorers' `/token/` and `/address/`
//!   (Etherscan, Basescan, BscScan, Arbiscan, PolygonScan, Snowtrace,
//!   Optimistic Etherscan). An address in any other URL (a wallet, a
//!   transaction, a referral link) is not a call.
//! - Outside URLs, every maximal run of ASCII letters and digits is a
//!   candidate: a Solana address is a run of 32 to 44 base58 digits that
//!   decodes to exactly 32 bytes; an EVM address is `0x` and exactly 40 hex
//!   digits. A run that is longer (a signature, a hash) is neither.
//! - An EVM address's network is the link's (its path or host), else the
//!   configured default.
//! - Addresses on the ignore list (system programs, wrapped SOL, stable
//!   coins, the zero address …) are not calls.
//! - One call per address per post; a link's network wins over the default.

use std::collections::HashSet;

use engine::token::{Chain, Token};
use serde::{Deserialize, Serialize};

use crate::network::Network;

/// Well-known addresses that are never a token call: programs, wrapped
/// native coins, stable coins, burn addresses.
pub const DEFAULT_IGNORED: &[&str] = &[
    // Solana: programs.
    "11111111111111111111111111111111",
    "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA",
    "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb",
    "ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL",
    "ComputeBudget111111111111111111111111111111",
    "metaqbxxUerdq28cj1RbAWkYQm3ybzjb6a8bt518x1s",
    "6EF8rrecthR5Dkzon8Nwu78hRvfCKubJ14M5uBEwF6P",
    "675kPX9MHTjS2zt1qfr1NYHuzeLXfQM9H24wFSUt1Mp8",
    "JUP6LkbZbjS1jKKwapdHNy74zcZ3tLUZoi5QNyVTaV4",
    // Solana: wrapped SOL and stable coins.
    "So11111111111111111111111111111111111111112",
    "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v",
    "Es9vMFrajaCERJ7BGzYMAMmP5xB5YQ5Vn5cFsKTLXoUk",
    // EVM: zero and burn addresses.
    "0x0000000000000000000000000000000000000000",
    "0x000000000000000000000000000000000000dead",
    // Ethereum: WETH, USDC, USDT, DAI, WBTC.
    "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2",
    "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48",
    "0xdac17f958d2ee523a2206206994597c13d831ec7",
    "0x6b175474e89094c44da98b954eedeac495271d0f",
    "0x2260fac5e5542a773aa44fbcfedf7c193bc2c599",
    // Base: WETH, USDC.
    "0x4200000000000000000000000000000000000006",
    "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913",
    // BSC: WBNB, USDT, USDC.
    "0xbb4cdb9cbd36b01bd1cbaebf2de08d9173bc095c",
    "0x55d398326f99059ff775485246999027b3197955",
    "0x8ac76a51cc950d9822d68b83fe1ad97b32cd580d",
];

/// How addresses are read from posts: the `[sources.extract]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExtractConfig {
    /// The network of an EVM address that comes with no link naming one
    /// [default: `ethereum`].
    pub default_evm_network: Network,
    /// Addresses that are never a call [default: [`DEFAULT_IGNORED`]:
    /// programs, wrapped SOL, stable coins, burn addresses].
    pub ignore: Vec<String>,
}

impl Default for ExtractConfig {
    fn default() -> Self {
        ExtractConfig {
            default_evm_network: Network::Ethereum,
            ignore: DEFAULT_IGNORED.iter().map(|&s| s.to_owned()).collect(),
        }
    }
}

/// A token a post calls, and where to price it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Found {
    pub token: Token,
    pub network: Network,
}

/// Reads the addresses of posts; build once, use for every post.
#[derive(Debug, Clone)]
pub struct Extractor {
    default_evm: Network,
    ignore: HashSet<Token>,
}

/// Characters that may wrap a URL or an address in running text:
/// brackets, quotes, Markdown's marks, sentence punctuation.
const WRAPPING: &[char] = &[
    '(', ')', '[', ']', '{', '}', '<', '>', '"', '\'', '`', '*', '_', '~', '|', ',', '.', ';', ':',
    '!', '?',
];

impl Extractor {
    /// An extractor with `config`; an ignore entry that is no address is an
    /// error, named.
    pub fn new(config: &ExtractConfig) -> Result<Extractor, String> {
        if !config.default_evm_network.is_evm() {
            return Err(format!(
                "default_evm_network `{}` is not an EVM network",
                config.default_evm_network
            ));
        }
        let ignore = config
            .ignore
            .iter()
            .map(|a| Token::parse(a.trim()).map_err(|e| format!("ignore `{a}`: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(Extractor {
            default_evm: config.default_evm_network,
            ignore,
        })
    }

    /// The tokens `text` and `links` call, each once, in the order they
    /// first appear (the text's, then the links').
    pub fn extract(&self, text: &str, links: &[&str]) -> Vec<Found> {
        let mut found = Vec::new();
        for word in text.split_whitespace() {
            self.word(word, &mut found);
        }
        for link in links {
            self.link(link.trim(), &mut found);
        }
        found
    }

    /// One word of running text: a URL, or text with a URL inside (a
    /// Markdown link), or plain text.
    fn word(&self, word: &str, found: &mut Vec<Found>) {
        if let Some(start) = url_start(word) {
            self.text(&word[..start], found);
            self.link(&word[start..], found);
        } else {
            self.text(word, found);
        }
    }

    /// Plain text: every run of ASCII letters and digits is a candidate.
    fn text(&self, text: &str, found: &mut Vec<Found>) {
        for run in text
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|r| (32..=44).contains(&r.len()))
        {
            if let Some(token) = address(run) {
                let network = match token.chain() {
                    Chain::Solana => Network::Solana,
                    Chain::Evm => self.default_evm,
                };
                self.add(Found { token, network }, false, found);
            }
        }
    }

    /// A link: the token its site puts in it, if it is one the rules know.
    fn link(&self, url: &str, found: &mut Vec<Found>) {
        let url = url.trim_end_matches(WRAPPING);
        let Some(link) = Link::parse(url) else {
            return;
        };
        for (candidate, network) in link.tokens() {
            let Some(token) = address(candidate) else {
                continue;
            };
            let fits = match token.chain() {
                Chain::Solana => network == Network::Solana,
                Chain::Evm => network.is_evm(),
            };
            if fits {
                self.add(Found { token, network }, true, found);
            }
        }
    }

    /// Adds `f` unless ignored or found already; a link's network replaces
    /// a default one.
    fn add(&self, f: Found, from_link: bool, found: &mut Vec<Found>) {
        if self.ignore.contains(&f.token) {
            return;
        }
        match found.iter_mut().find(|g| g.token == f.token) {
            Some(g)
                if from_link && g.network == self.default_evm && f.token.chain() == Chain::Evm =>
            {
                g.network = f.network;
            }
            Some(_) => {}
            None => found.push(f),
        }
    }
}

/// A token address, if `run` is exactly one.
fn address(run: &str) -> Option<Token> {
    let b = run.as_bytes();
    let evm = b.len() == 42 && b[0] == b'0' && (b[1] == b'x' || b[1] == b'X');
    if evm || ((32..=44).contains(&b.len()) && b.iter().all(|&c| is_base58(c))) {
        Token::parse(run).ok()
    } else {
        None
    }
}

fn is_base58(c: u8) -> bool {
    c.is_ascii_alphanumeric() && !matches!(c, b'0' | b'O' | b'I' | b'l')
}

/// Where a URL starts in `word`, if it holds one: a scheme (`https://`),
/// `www.`, or a host followed by a path.
fn url_start(word: &str) -> Option<usize> {
    if let Some(sep) = word.find("://") {
        let scheme = word[..sep]
            .bytes()
            .rev()
            .take_while(u8::is_ascii_alphabetic)
            .count();
        return Some(sep - scheme);
    }
    let trimmed = word.trim_start_matches(WRAPPING);
    let start = word.len() - trimmed.len();
    let (host, rest) = trimmed.split_once('/')?;
    (looks_like_host(host) && !rest.is_empty()).then_some(start)
}

/// `host` has a dot, only letters, digits, `-` and `.`, and ends in a
/// label of letters (a top-level domain).
fn looks_like_host(host: &str) -> bool {
    let tld = host.rsplit('.').next().unwrap_or_default();
    host.contains('.')
        && host
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.')
        && (2..=24).contains(&tld.len())
        && tld.bytes().all(|c| c.is_ascii_alphabetic())
}

/// A URL cut into what the rules look at.
struct Link<'a> {
    host: String,
    segments: Vec<&'a str>,
    query: &'a str,
}

impl<'a> Link<'a> {
    fn parse(url: &'a str) -> Option<Link<'a>> {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let (rest, _fragment) = rest.split_once('#').unwrap_or((rest, ""));
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut parts = rest.split('/');
        let host = parts.next()?.to_ascii_lowercase();
        let host = host.strip_prefix("www.").unwrap_or(&host).to_owned();
        let host = host.split(':').next().unwrap_or_default().to_owned();
        Some(Link {
            host,
            segments: parts.filter(|s| !s.is_empty()).collect(),
            query,
        })
    }

    fn segment(&self, i: usize) -> &'a str {
        self.segments.get(i).copied().unwrap_or_default()
    }

    fn param(&self, name: &str) -> Option<&'a str> {
        self.query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The candidate addresses the site puts in this link, each with its
    /// network.
    fn tokens(&self) -> Vec<(&'a str, Network)> {
        let seg = |i| self.segment(i);
        let named = |name: &str| Network::from_name(name);
        let one = |addr: &'a str, network: Option<Network>| match network {
            Some(n) if !addr.is_empty() => vec![(addr, n)],
            _ => Vec::new(),
        };
        match self.host.as_str() {
            "dexscreener.com" => one(seg(1), named(seg(0))),
            "birdeye.so" => match seg(0) {
                "token" => one(seg(1), named(self.param("chain").unwrap_or("solana"))),
                chain if seg(1) == "token" => one(seg(2), named(chain)),
                _ => Vec::new(),
            },
            "pump.fun" => match seg(0) {
                "coin" => one(seg(1), Some(Network::Solana)),
                first => one(first, Some(Network::Solana)),
            },
            "jup.ag" => match seg(0) {
                "swap" => seg(1)
                    .split('-')
                    .filter(|side| side.len() >= 32)
                    .map(|side| (side, Network::Solana))
                    .collect(),
                "tokens" => one(seg(1), Some(Network::Solana)),
                _ => Vec::new(),
            },
            "gmgn.ai" if seg(1) == "token" => one(seg(2), named(seg(0))),
            "solscan.io" if seg(0) == "token" => one(seg(1), Some(Network::Solana)),
            host => match (explorer_network(host), seg(0)) {
                (Some(network), "token" | "address") => one(seg(1), Some(network)),
                _ => Vec::new(),
            },
        }
    }
}

/// The network of an EVM block explorer's host.
fn explorer_network(host: &str) -> Option<Network> {
    Some(match host {
        "etherscan.io" => Network::Ethereum,
        "basescan.org" => Network::Base,
        "bscscan.com" => Network::Bsc,
        "arbiscan.io" => Network::Arbitrum,
        "polygonscan.com" => Network::Polygon,
        "snowtrace.io" => Network::Avalanche,
        "optimistic.etherscan.io" => Network::Optimism,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const JUP: &str = "JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN";
    const PEPE: &str = "0x6982508145454ce325ddbe47a25d4ec3d2311933";

    fn found(text: &str, links: &[&str]) -> Vec<(String, Network)> {
        Extractor::new(&ExtractConfig::default())
            .unwrap()
            .extract(text, links)
            .into_iter()
            .map(|f| (f.token.to_string(), f.network))
            .collect()
    }

    #[test]
    fn plain_addresses_are_found_once_each() {
        let text = format!("CA: {JUP}\nbuy {JUP} now, also {PEPE}!");
        assert_eq!(
            found(&text, &[]),
            [
                (JUP.to_owned(), Network::Solana),
                (PEPE.to_owned(), Network::Ethereum)
            ]
        );
    }

    #[test]
    fn a_links_network_wins_over_the_default() {
        let text = format!("{PEPE} https://basescan.org/token/{PEPE}");
        assert_eq!(found(&text, &[]), [(PEPE.to_owned(), Network::Base)]);
        let link = format!("https://dexscreener.com/bsc/{PEPE}");
        assert_eq!(found(PEPE, &[&link]), [(PEPE.to_owned(), Network::Bsc)]);
    }

    #[test]
    fn addresses_in_other_urls_are_not_calls() {
        for url in [
            format!("https://solscan.io/account/{JUP}"),
            format!("https://t.me/some_bot?start={JUP}"),
            format!("example.com/{JUP}"),
            format!("https://etherscan.io/tx/{PEPE}"),
        ] {
            assert_eq!(found(&url, &[]), [], "{url}");
        }
    }

    #[test]
    fn look_alikes_are_not_addresses() {
        let too_long = format!("{JUP}x");
        let hash = format!("{PEPE}00");
        let with_zero = JUP.replace('J', "0");
        for text in [
            too_long.as_str(),
            hash.as_str(),
            with_zero.as_str(),
            "0xABC",
        ] {
            assert_eq!(found(text, &[]), [], "{text}");
        }
    }

    #[test]
    fn the_ignore_list_is_checked_and_applied() {
        assert_eq!(
            found("So11111111111111111111111111111111111111112", &[]),
            []
        );
        let bad = ExtractConfig {
            ignore: vec!["not-an-address".to_owned()],
            ..ExtractConfig::default()
        };
        assert!(Extractor::new(&bad).unwrap_err().contains("not-an-address"));
        let solana_default = ExtractConfig {
            default_evm_network: Network::Solana,
            ..ExtractConfig::default()
        };
        assert!(Extractor::new(&solana_default).is_err());
    }
}
