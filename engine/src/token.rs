//! Token (contract) addresses: parsing, canonical form, display and routing.
//!
//! Every input line names a token, and the engine keys its per-token state by
//! it and routes the line to a shard by it. That makes three demands which
//! this module meets:
//!
//! * **Canonical and cheap to key on.** A [`Token`] is a 33-byte `Copy` value
//!   (chain tag plus 32 bytes), so two spellings of the same address (an EVM
//!   address in upper and lower case) compare and hash equal, and a map key
//!   costs no allocation.
//! * **Fast, allocation-free parsing.** Parsing runs for every line, one to two
//!   million times a second, so base58 is decoded ten digits at a time into
//!   64-bit limbs on the stack rather than with the textbook digit-at-a-time
//!   loop over a byte vector.
//! * **A routing hash that never changes.** [`Token::route_hash`] decides which
//!   shard and which stream partition a token belongs to, so it is pinned
//!   (word-wise FNV-1a 64 with a SplitMix64 finish, spelled out here and
//!   fixed by tests) instead of borrowing a
//!   std or third-party hasher whose output may change between versions or be
//!   seeded per process.
//!
//! Solana addresses are kept "as given": base58 is a bijection between strings
//! and byte strings (leading `1`s stand for leading zero bytes), so storing the
//! decoded bytes and re-encoding them reproduces the input text exactly.
//! EVM addresses are accepted in any case, after `0x` or `0X`, and shown as
//! lowercase `0x…`. Surrounding whitespace is not trimmed: that is the
//! caller's job, and a stray space is reported as an invalid character.

use std::fmt;
use std::str::FromStr;

/// The address family a [`Token`] belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum Chain {
    Solana,
    Evm,
}

impl Chain {
    /// The byte that [`Token::route_hash`] feeds in ahead of the address, so
    /// that a Solana and an EVM address with equal bytes land apart. Part of
    /// the pinned routing contract: never renumber.
    const fn route_tag(self) -> u8 {
        match self {
            Chain::Solana => 0,
            Chain::Evm => 1,
        }
    }
}

/// A validated token address in canonical form.
///
/// 33 bytes and `Copy`. An EVM address uses the first 20 bytes and keeps the
/// rest zero, so equality, ordering and hashing see only the address.
/// Ordered by chain, then bytes.
///
/// The bytes come first in memory: a copy of a token is two 16-byte stores
/// from its start and one byte, and [`Token::route_hash`] reads the bytes
/// in 8-byte words. Laid out this way each word lies inside one store, so
/// a token just copied (into an event, then into a batch) is read back
/// from the store buffer; behind the chain byte, two words straddled two
/// stores each, and each such read waited for the stores to reach the
/// cache, a stall on every event routed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(C)]
pub struct Token {
    bytes: [u8; 32],
    chain: Chain,
}

/// One word for the hasher: the address's four 8-byte words compressed
/// with keys drawn once per process, then the chain. A shard hashes the
/// token of every event, and feeding the hasher 33 bytes took a fifth of a
/// shard's time, so the words are compressed first; but any 32 bytes is a
/// valid Solana address, so the compression must be keyed: an unkeyed fold
/// (the XOR of rotated words this replaced) lets anyone mint any number of
/// addresses that fold to one word and pile them into one bucket of every
/// table keyed by token. See [`compress`].
impl std::hash::Hash for Token {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let word = |i: usize| {
            let w: [u8; 8] = self.bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes");
            u64::from_le_bytes(w)
        };
        state.write_u64(
            compress([word(0), word(1), word(2), word(3)]) ^ u64::from(self.chain.route_tag()),
        );
    }
}

/// The process's keys for [`compress`], drawn at first use from the
/// operating system's randomness (through ahash's random state).
fn hash_keys() -> &'static [u64; 4] {
    static KEYS: std::sync::OnceLock<[u64; 4]> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let random = ahash::RandomState::new();
        [0u64, 1, 2, 3].map(|i| random.hash_one(i))
    })
}

/// NH, the keyed compression of UMAC: `(w0 + k0)(w1 + k1) + (w2 + k2)(w3 +
/// k3)` as 128-bit products of 64-bit sums. For distinct inputs the 128-bit
/// results collide with probability at most 2^-64 over the keys, so without
/// the keys no one can choose addresses that collide. The halves are
/// folded into the word the table's own (keyed) hasher then mixes. Two
/// independent multiplications: as cheap as the fold it replaced, within
/// noise (BENCHMARKS.md, "[2.3]").
fn compress(w: [u64; 4]) -> u64 {
    let k = hash_keys();
    let product = |a: u64, b: u64| u128::from(a) * u128::from(b);
    let sum = product(w[0].wrapping_add(k[0]), w[1].wrapping_add(k[1]))
        .wrapping_add(product(w[2].wrapping_add(k[2]), w[3].wrapping_add(k[3])));
    (sum as u64) ^ ((sum >> 64) as u64)
}

impl Ord for Token {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.chain, self.bytes).cmp(&(other.chain, other.bytes))
    }
}

impl PartialOrd for Token {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Why a string is not a token address. Each message is meant to be shown to
/// a person as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token must not be empty")]
    Empty,
    #[error("token looks like an EVM address but is not 0x followed by 40 hex digits")]
    MalformedEvm,
    #[error("token is not valid base58 (character {ch:?} is not in the alphabet)")]
    InvalidBase58 { ch: char },
    #[error("token is base58 but decodes to {decoded} bytes, not the 32 of a Solana address")]
    WrongLength { decoded: usize },
    #[error("token is too long to be a Solana or EVM address")]
    TooLong,
}

const SOLANA_LEN: usize = 32;
const EVM_LEN: usize = 20;
const EVM_TEXT_LEN: usize = 2 + 2 * EVM_LEN;

/// Longest base58 text we decode fully. Real addresses are at most 44
/// characters; going further lets the wrong-length error report a true byte
/// count for near misses while bounding the work done on junk.
const MAX_BASE58_LEN: usize = 64;
/// 58^64 < 2^375, so 6 limbs of 64 bits always hold a 64-digit value.
const DECODE_LIMBS: usize = 6;
/// Digits folded into one limb pass while decoding: 58^10 < 2^59, so the
/// digits of a chunk accumulate in a `u64`, and a limb times 58^10 plus a
/// carry fits in a `u128` (one widening multiply on 64-bit targets). A
/// 44-character address then costs five passes over at most four limbs.
const DECODE_CHUNK: usize = 10;
/// Digits produced per division while encoding: 58^5 < 2^32, so long
/// division of 32-bit limbs stays in `u64`.
const ENCODE_CHUNK: usize = 5;
const POW58: [u64; DECODE_CHUNK + 1] = {
    let mut table = [1u64; DECODE_CHUNK + 1];
    let mut i = 1;
    while i <= DECODE_CHUNK {
        table[i] = table[i - 1] * 58;
        i += 1;
    }
    table
};
/// A 32-byte value has at most 44 base58 digits; encoding works in whole
/// chunks, so leave room for one chunk's worth of padding digits.
const ENCODE_BUF: usize = 48;

const BASE58_ALPHABET: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";
/// Marks bytes that are not digits in the lookup tables below.
const NOT_A_DIGIT: u8 = 0xFF;

/// Digit value of every byte, so the hot loop does one load per character
/// instead of range comparisons.
static BASE58_DIGITS: [u8; 256] = {
    let mut table = [NOT_A_DIGIT; 256];
    let mut i = 0;
    while i < BASE58_ALPHABET.len() {
        table[BASE58_ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};

static HEX_DIGITS: [u8; 256] = {
    let mut table = [NOT_A_DIGIT; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl Token {
    /// Parses a Solana address (base58 of exactly 32 bytes, Bitcoin
    /// alphabet) or an EVM address (`0x` or `0X` then exactly 40 hex digits
    /// in any case). Does not allocate.
    pub fn parse(s: &str) -> Result<Token, TokenError> {
        let b = s.as_bytes();
        if b.is_empty() {
            return Err(TokenError::Empty);
        }
        // '0' is not a base58 digit, so the prefix alone settles which family
        // the caller meant and which error will make sense to them.
        if b.len() >= 2 && b[0] == b'0' && (b[1] == b'x' || b[1] == b'X') {
            return parse_evm(b);
        }
        let bytes = decode_solana(s)?;
        Ok(Token {
            chain: Chain::Solana,
            bytes,
        })
    }

    /// A Solana token from its raw 32 bytes.
    pub const fn solana(bytes: [u8; 32]) -> Token {
        Token {
            chain: Chain::Solana,
            bytes,
        }
    }

    /// An EVM token from its raw 20 bytes.
    pub const fn evm(address: [u8; 20]) -> Token {
        let mut bytes = [0u8; 32];
        let mut i = 0;
        while i < EVM_LEN {
            bytes[i] = address[i];
            i += 1;
        }
        Token {
            chain: Chain::Evm,
            bytes,
        }
    }

    /// The token as a snapshot stores it: the chain's routing tag and the
    /// 32 address bytes.
    pub(crate) fn to_raw(self) -> (u8, [u8; 32]) {
        (self.chain.route_tag(), self.bytes)
    }

    /// The token [`Token::to_raw`] gave, if `tag` names a chain and an EVM
    /// address keeps its unused bytes zero (so equality still sees only
    /// the address).
    pub(crate) fn from_raw(tag: u8, bytes: [u8; 32]) -> Option<Token> {
        let chain = match tag {
            0 => Chain::Solana,
            1 if bytes[EVM_LEN..].iter().all(|&b| b == 0) => Chain::Evm,
            _ => return None,
        };
        Some(Token { bytes, chain })
    }

    pub fn chain(&self) -> Chain {
        self.chain
    }

    /// The address bytes: 32 for Solana, 20 for EVM.
    pub fn as_bytes(&self) -> &[u8] {
        match self.chain {
            Chain::Solana => &self.bytes,
            Chain::Evm => &self.bytes[..EVM_LEN],
        }
    }

    /// Stable routing hash: the chain tag (0 Solana, 1 EVM) xored into the
    /// FNV-1a 64 offset basis, then FNV-1a over the 32 address bytes taken
    /// as four little-endian 64-bit words (an EVM address's last 12 bytes are
    /// zero), then the SplitMix64 finaliser so that the low bits, which
    /// `% N` uses, depend on every byte. Word-wise because routing runs on
    /// every event: this costs a few nanoseconds where byte-wise FNV cost
    /// about 25.
    ///
    /// This value must never change across versions, builds or processes:
    /// the shard is `route_hash % N` and the stream partition is derived from
    /// it too, so a change would send a token's events to a shard or partition
    /// that does not hold its state. Tests pin known values.
    pub fn route_hash(&self) -> u64 {
        let mut h = FNV_OFFSET_BASIS ^ u64::from(self.chain.route_tag());
        for word in self.bytes.chunks_exact(8) {
            let word: [u8; 8] = word.try_into().expect("chunks of 8");
            h = (h ^ u64::from_le_bytes(word)).wrapping_mul(FNV_PRIME);
        }
        h ^= h >> 30;
        h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 27;
        h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    }

    /// Appends the display form (base58, or `0x` and lowercase hex) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.text().as_bytes());
    }

    /// The display form, rendered on the stack. Base58 costs a long
    /// division per five digits, so a caller that prints one token many
    /// times (every alert of an event names it) keeps this and copies it.
    pub fn text(&self) -> TokenText {
        let mut buf = [0u8; ENCODE_BUF];
        let (start, end) = match self.chain {
            Chain::Evm => {
                buf[0] = b'0';
                buf[1] = b'x';
                for (i, &byte) in self.bytes[..EVM_LEN].iter().enumerate() {
                    buf[2 + 2 * i] = HEX_LOWER[usize::from(byte >> 4)];
                    buf[3 + 2 * i] = HEX_LOWER[usize::from(byte & 0x0F)];
                }
                (0, EVM_TEXT_LEN)
            }
            Chain::Solana => (encode_base58(&self.bytes, &mut buf), ENCODE_BUF),
        };
        TokenText {
            buf,
            start: start as u8,
            end: end as u8,
        }
    }
}

/// A token's display form, held on the stack (see [`Token::text`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenText {
    buf: [u8; ENCODE_BUF],
    start: u8,
    end: u8,
}

impl TokenText {
    /// The text's bytes, all ASCII.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[usize::from(self.start)..usize::from(self.end)]
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).expect("the encoders emit only ASCII")
    }
}

impl fmt::Debug for TokenText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` keeps width and alignment flags working for tables and logs.
        f.pad(self.text().as_str())
    }
}

impl FromStr for Token {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Token, TokenError> {
        Token::parse(s)
    }
}

fn parse_evm(b: &[u8]) -> Result<Token, TokenError> {
    if b.len() != EVM_TEXT_LEN {
        return Err(TokenError::MalformedEvm);
    }
    let mut address = [0u8; EVM_LEN];
    for (out, pair) in address.iter_mut().zip(b[2..].chunks_exact(2)) {
        let hi = HEX_DIGITS[usize::from(pair[0])];
        let lo = HEX_DIGITS[usize::from(pair[1])];
        if hi == NOT_A_DIGIT || lo == NOT_A_DIGIT {
            return Err(TokenError::MalformedEvm);
        }
        *out = (hi << 4) | lo;
    }
    Ok(Token::evm(address))
}

/// Multiplies the little-endian limb number by `mul` and adds `add`, growing
/// it by a limb when the carry spills over.
#[inline(always)]
fn mul_add(limbs: &mut [u64; DECODE_LIMBS], len: &mut usize, mul: u64, add: u64) {
    let mut carry = add;
    for limb in &mut limbs[..*len] {
        let v = u128::from(*limb) * u128::from(mul) + u128::from(carry);
        *limb = v as u64;
        carry = (v >> 64) as u64;
    }
    if carry != 0 {
        // Cannot overflow the array: the input is capped at MAX_BASE58_LEN
        // digits, whose value always fits in DECODE_LIMBS limbs.
        limbs[*len] = carry;
        *len += 1;
    }
}

fn decode_solana(s: &str) -> Result<[u8; SOLANA_LEN], TokenError> {
    let b = s.as_bytes();
    let mut limbs = [0u64; DECODE_LIMBS];
    let mut len = 0usize;
    let mut leading_zeros = 0usize;
    let mut chunk = 0u64;
    let mut chunk_digits = 0usize;

    for (i, &c) in b.iter().enumerate() {
        if i == MAX_BASE58_LEN {
            return Err(TokenError::TooLong);
        }
        let d = BASE58_DIGITS[usize::from(c)];
        if d == NOT_A_DIGIT {
            // Every earlier byte was an ASCII digit, so `i` is on a char
            // boundary and the offending character can be named whole.
            let ch = s[i..].chars().next().unwrap_or('\u{FFFD}');
            return Err(TokenError::InvalidBase58 { ch });
        }
        if d == 0 && leading_zeros == i {
            leading_zeros += 1;
        }
        chunk = chunk * 58 + u64::from(d);
        chunk_digits += 1;
        if chunk_digits == DECODE_CHUNK {
            mul_add(&mut limbs, &mut len, POW58[DECODE_CHUNK], chunk);
            chunk = 0;
            chunk_digits = 0;
        }
    }
    if chunk_digits != 0 {
        mul_add(&mut limbs, &mut len, POW58[chunk_digits], chunk);
    }

    let value_bytes = match len {
        0 => 0,
        n => (n - 1) * 8 + (64 - limbs[n - 1].leading_zeros() as usize).div_ceil(8),
    };
    let decoded = leading_zeros + value_bytes;
    if decoded != SOLANA_LEN {
        return Err(TokenError::WrongLength { decoded });
    }
    let mut out = [0u8; SOLANA_LEN];
    for i in 0..value_bytes {
        out[SOLANA_LEN - 1 - i] = (limbs[i / 8] >> (8 * (i % 8))) as u8;
    }
    Ok(out)
}

/// Writes the base58 form of `bytes` at the end of `buf` and returns where it
/// starts. Only runs on output, so it favours clarity over speed, but still
/// divides five digits at a time.
fn encode_base58(bytes: &[u8; SOLANA_LEN], buf: &mut [u8; ENCODE_BUF]) -> usize {
    let leading_zeros = bytes.iter().take_while(|&&b| b == 0).count();
    // Big-endian limbs make long division a single forward pass.
    let mut limbs = [0u32; SOLANA_LEN / 4];
    for (limb, quad) in limbs.iter_mut().zip(bytes.chunks_exact(4)) {
        *limb = u32::from_be_bytes([quad[0], quad[1], quad[2], quad[3]]);
    }
    let mut first = limbs.iter().take_while(|&&l| l == 0).count();
    let mut pos = ENCODE_BUF;
    while first < limbs.len() {
        let mut rem = 0u64;
        for limb in &mut limbs[first..] {
            let cur = (rem << 32) | u64::from(*limb);
            *limb = (cur / POW58[ENCODE_CHUNK]) as u32;
            rem = cur % POW58[ENCODE_CHUNK];
        }
        for _ in 0..ENCODE_CHUNK {
            pos -= 1;
            buf[pos] = BASE58_ALPHABET[(rem % 58) as usize];
            rem /= 58;
        }
        while first < limbs.len() && limbs[first] == 0 {
            first += 1;
        }
    }
    // The last chunk is padded to five digits; those pads are zero digits
    // that would otherwise read as extra leading zero bytes.
    while pos < ENCODE_BUF && buf[pos] == BASE58_ALPHABET[0] {
        pos += 1;
    }
    for _ in 0..leading_zeros {
        pos -= 1;
        buf[pos] = BASE58_ALPHABET[0];
    }
    pos
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRAPPED_SOL: &str = "So11111111111111111111111111111111111111112";
    const WRAPPED_SOL_BYTES: [u8; 32] = [
        6, 155, 136, 87, 254, 171, 129, 132, 251, 104, 127, 99, 70, 24, 192, 53, 218, 196, 57, 220,
        26, 235, 59, 85, 152, 160, 240, 0, 0, 0, 0, 1,
    ];
    const SYSTEM_PROGRAM: &str = "11111111111111111111111111111111";
    const USDC_SOLANA: &str = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v";
    const USDC_EVM: &str = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48";

    fn display(t: &Token) -> String {
        let mut out = Vec::new();
        t.write_to(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, t.to_string(), "write_to and Display must agree");
        assert_eq!(text, t.text().as_str(), "write_to and text must agree");
        text
    }

    #[test]
    fn parses_known_solana_address() {
        let t = Token::parse(WRAPPED_SOL).unwrap();
        assert_eq!(t.chain(), Chain::Solana);
        assert_eq!(t.as_bytes(), &WRAPPED_SOL_BYTES);
        assert_eq!(t, Token::solana(WRAPPED_SOL_BYTES));
    }

    #[test]
    fn all_ones_is_all_zero_bytes() {
        let t = Token::parse(SYSTEM_PROGRAM).unwrap();
        assert_eq!(t.as_bytes(), &[0u8; 32]);
        assert_eq!(display(&t), SYSTEM_PROGRAM);
    }

    #[test]
    fn solana_round_trips_exactly() {
        for s in [
            WRAPPED_SOL,
            SYSTEM_PROGRAM,
            USDC_SOLANA,
            "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA",
            "1111111111111111111111111111111z",
            "JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN",
        ] {
            let t: Token = s.parse().unwrap();
            assert_eq!(display(&t), s);
        }
    }

    #[test]
    fn extreme_solana_values_round_trip() {
        for bytes in [[0xFFu8; 32], [0u8; 32], {
            let mut b = [0u8; 32];
            b[31] = 1;
            b
        }] {
            let t = Token::solana(bytes);
            let back = Token::parse(&t.to_string()).unwrap();
            assert_eq!(back, t);
        }
        // 2^256 - 1 is the largest 32-byte value: 44 digits.
        assert_eq!(Token::solana([0xFF; 32]).to_string().len(), 44);
    }

    #[test]
    fn evm_any_case_displays_lowercase() {
        let upper = Token::parse(USDC_EVM).unwrap();
        let lower = Token::parse(&USDC_EVM.to_ascii_lowercase()).unwrap();
        let capital_x = Token::parse(&USDC_EVM.replacen("0x", "0X", 1)).unwrap();
        assert_eq!(upper, lower);
        assert_eq!(upper, capital_x);
        assert_eq!(upper.chain(), Chain::Evm);
        assert_eq!(upper.as_bytes().len(), 20);
        assert_eq!(upper.as_bytes()[0], 0xA0);
        assert_eq!(upper.as_bytes()[19], 0x48);
        assert_eq!(display(&upper), USDC_EVM.to_ascii_lowercase());
    }

    #[test]
    fn chains_with_equal_bytes_differ() {
        let evm = Token::evm([0; 20]);
        let sol = Token::solana([0; 32]);
        assert_ne!(evm, sol);
        assert_ne!(evm.route_hash(), sol.route_hash());
    }

    #[test]
    fn tokens_order_by_chain_then_bytes_whatever_the_layout() {
        let mut high = [0u8; 32];
        high[0] = 0xff;
        let mut low_last = [0u8; 32];
        low_last[31] = 1;
        assert!(Token::solana([0xff; 32]) < Token::evm([0; 20]));
        assert!(Token::solana(low_last) < Token::solana(high));
        assert!(Token::evm([1; 20]) < Token::evm([2; 20]));
        assert_eq!(size_of::<Token>(), 33);
    }

    #[test]
    fn the_compressed_hash_keeps_tokens_apart() {
        use std::hash::BuildHasher;
        let hash = |t: &Token| crate::FlatHasher::default().hash_one(t);
        let mut seen = std::collections::HashSet::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..20_000u32 {
            let mut bytes = [0u8; 32];
            for b in &mut bytes {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            let mut evm = [0u8; 20];
            // Vanity addresses: leading zero bytes, then a counter.
            evm[16..].copy_from_slice(&i.to_be_bytes());
            for t in [
                Token::solana(bytes),
                Token::evm(evm),
                Token::evm(bytes[..20].try_into().unwrap()),
            ] {
                assert!(seen.insert(hash(&t)), "{t} collides");
            }
        }
        assert_ne!(hash(&Token::solana([0; 32])), hash(&Token::evm([0; 20])));
    }

    #[test]
    fn shard_of_is_the_route_hash_modulo_the_shards() {
        let token = Token::parse(SYSTEM_PROGRAM).unwrap();
        for shards in 1..=9 {
            assert_eq!(
                crate::router::shard_of(&token, shards) as u64,
                token.route_hash() % shards as u64
            );
        }
    }

    #[test]
    fn route_hash_is_pinned() {
        // Changing these values reroutes every token; see `route_hash`.
        // Computed independently (a few lines of Python over the same
        // definition), not copied from this implementation's output.
        assert_eq!(
            Token::parse(SYSTEM_PROGRAM).unwrap().route_hash(),
            0xaca6_d6b5_4be3_ed05
        );
        assert_eq!(
            Token::parse(USDC_EVM).unwrap().route_hash(),
            0x1a3d_112c_d624_a29c
        );
    }

    #[test]
    fn display_respects_padding() {
        let t = Token::evm([0xAB; 20]);
        let padded = format!("{t:>44}|");
        assert_eq!(padded, format!("  0x{}|", "ab".repeat(20)));
    }

    #[test]
    fn empty_is_rejected() {
        assert_eq!(Token::parse(""), Err(TokenError::Empty));
        assert_eq!(TokenError::Empty.to_string(), "token must not be empty");
    }

    #[test]
    fn malformed_evm_is_rejected() {
        for s in [
            "0x",
            "0X",
            "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB4",
            "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB481",
            "0xG0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48",
            "0x A0b86991c6218b36c1d19D4a2e9Eb0cE3606eB4",
            "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB\u{e9}",
        ] {
            assert_eq!(Token::parse(s), Err(TokenError::MalformedEvm), "{s:?}");
        }
        assert_eq!(
            TokenError::MalformedEvm.to_string(),
            "token looks like an EVM address but is not 0x followed by 40 hex digits"
        );
    }

    #[test]
    fn invalid_base58_names_the_character() {
        let cases = [
            ("So1111111111111111111111111111111111111111O", 'O'),
            ("0", '0'),
            ("Il", 'I'),
            ("abcl", 'l'),
            (" So11111111111111111111111111111111111111112", ' '),
            ("So1111111111111111111111111111111111111111\u{e9}", '\u{e9}'),
            ("So11\u{1F600}", '\u{1F600}'),
        ];
        for (s, ch) in cases {
            assert_eq!(
                Token::parse(s),
                Err(TokenError::InvalidBase58 { ch }),
                "{s:?}"
            );
        }
        assert_eq!(
            TokenError::InvalidBase58 { ch: 'O' }.to_string(),
            "token is not valid base58 (character 'O' is not in the alphabet)"
        );
    }

    #[test]
    fn wrong_length_reports_decoded_size() {
        assert_eq!(
            Token::parse("1111"),
            Err(TokenError::WrongLength { decoded: 4 })
        );
        assert_eq!(
            Token::parse(&SYSTEM_PROGRAM[1..]),
            Err(TokenError::WrongLength { decoded: 31 })
        );
        assert_eq!(
            Token::parse(&format!("{SYSTEM_PROGRAM}1")),
            Err(TokenError::WrongLength { decoded: 33 })
        );
        // 58^44 > 2^256, so 44 'z's overflow into a 33rd byte.
        assert_eq!(
            Token::parse(&"z".repeat(44)),
            Err(TokenError::WrongLength { decoded: 33 })
        );
        assert_eq!(
            Token::parse(&"z".repeat(64)),
            Err(TokenError::WrongLength { decoded: 47 })
        );
        assert_eq!(
            Token::parse(&"1".repeat(64)),
            Err(TokenError::WrongLength { decoded: 64 })
        );
        assert_eq!(
            TokenError::WrongLength { decoded: 4 }.to_string(),
            "token is base58 but decodes to 4 bytes, not the 32 of a Solana address"
        );
    }

    #[test]
    fn overlong_input_is_too_long() {
        assert_eq!(Token::parse(&"z".repeat(65)), Err(TokenError::TooLong));
        assert_eq!(Token::parse(&"1".repeat(1000)), Err(TokenError::TooLong));
        assert_eq!(
            TokenError::TooLong.to_string(),
            "token is too long to be a Solana or EVM address"
        );
    }

    #[test]
    fn token_is_small_and_copy() {
        fn assert_copy<T: Copy>() {}
        assert_copy::<Token>();
        assert_eq!(std::mem::size_of::<Token>(), 33);
    }
}
