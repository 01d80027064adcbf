//! Hostile input for the tables keyed by token: any 32 bytes is a valid
//! Solana address, so anyone can mint addresses chosen to collide.

use std::collections::HashSet;
use std::hash::BuildHasher;

use engine::FlatHasher;
use engine::sim::colliding_tokens;
use engine::token::Token;

/// The unkeyed fold tokens were once hashed by: the four 8-byte words
/// XORed, rotated by 0, 16, 32 and 48 bits.
fn fold(t: &Token) -> u64 {
    let w = |i: usize| u64::from_le_bytes(t.as_bytes()[i * 8..i * 8 + 8].try_into().unwrap());
    w(0) ^ w(1).rotate_left(16) ^ w(2).rotate_left(32) ^ w(3).rotate_left(48)
}

#[test]
fn addresses_minted_to_fold_alike_hash_apart() {
    let minted = colliding_tokens(20_000, 3);
    assert!(
        minted.iter().all(|t| fold(t) == fold(&minted[0])),
        "minted to fold alike"
    );
    assert_eq!(minted.iter().collect::<HashSet<_>>().len(), minted.len());
    let hashes: HashSet<u64> = minted
        .iter()
        .map(|t| FlatHasher::default().hash_one(t))
        .collect();
    assert_eq!(
        hashes.len(),
        minted.len(),
        "every minted address hashes apart"
    );
    // What a table sees: the low bits pick the bucket. 20,000 keys in
    // 32,768 buckets fill about 15,000 of them if spread, 1 if piled up.
    let buckets: HashSet<u64> = hashes.iter().map(|h| h & 0x7fff).collect();
    assert!(
        buckets.len() > 12_000,
        "{} buckets of 32,768",
        buckets.len()
    );
    // std's keyed SipHash sees what `Token`'s `Hash` feeds it, too.
    let std_hashes: HashSet<u64> = {
        let s = std::hash::RandomState::new();
        minted.iter().map(|t| s.hash_one(t)).collect()
    };
    assert_eq!(std_hashes.len(), minted.len());
}
