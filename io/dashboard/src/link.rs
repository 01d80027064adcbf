//! Signed, expiring links: `{base}/dashboard/{chat}?exp={unix secs}&sig={hex}`.
//!
//! `sig` is HMAC-SHA256 under the dashboard's key over a fixed-length
//! message: a version tag, the chat id and the expiry, each as 8 big-endian
//! bytes, so no two (chat, expiry) pairs sign the same bytes. A link is
//! good while the wall clock is before `exp`; the check compares the MAC in
//! constant time (`hmac`'s `verify_slice`, over `subtle`), so how long a
//! refusal takes says nothing of how much of a forged signature was right.

use engine::event::ChatId;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// What every signed message starts with: a new layout gets a new tag, and
/// links of the old one stop working.
const TAG: &[u8] = b"callwatch-dashboard-v1";

/// An HMAC-SHA256 signature, in hex.
const SIG_HEX_LEN: usize = 64;

/// Why a link opens nothing. Each is answered 403.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `exp` or `sig` is missing or not of their form.
    #[error("this link is incomplete")]
    Malformed,
    /// The signature is not ours for this chat and expiry.
    #[error("this link is not valid")]
    Forged,
    /// The link was good until `exp`, which has passed.
    #[error("this link has expired")]
    Expired,
}

/// Signs and checks links with one key.
#[derive(Clone)]
pub struct Signer {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<key redacted>)")
    }
}

impl Signer {
    /// A signer with `key` (any length; the settings ask for 32 bytes).
    pub fn new(key: &[u8]) -> Signer {
        Signer {
            mac: Hmac::new_from_slice(key).expect("HMAC takes a key of any length"),
        }
    }

    fn keyed(&self, chat_id: ChatId, exp_secs: i64) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(TAG);
        mac.update(&chat_id.to_be_bytes());
        mac.update(&exp_secs.to_be_bytes());
        mac
    }

    /// The signature of a link for `chat_id` good until `exp_secs`, in hex.
    pub fn sign(&self, chat_id: ChatId, exp_secs: i64) -> String {
        hex(&self.keyed(chat_id, exp_secs).finalize().into_bytes())
    }

    /// Whether a link's `exp` and `sig` open `chat_id`'s pages at
    /// `now_secs`. The signature is checked first, so an expired link
    /// tells that it expired only if it was ours.
    pub fn check(
        &self,
        chat_id: ChatId,
        exp: Option<&str>,
        sig: Option<&str>,
        now_secs: i64,
    ) -> Result<Pass, Refusal> {
        let exp_secs: i64 = exp.and_then(|e| e.parse().ok()).ok_or(Refusal::Malformed)?;
        let sig = sig
            .filter(|s| s.len() == SIG_HEX_LEN)
            .and_then(unhex)
            .ok_or(Refusal::Malformed)?;
        self.keyed(chat_id, exp_secs)
            .verify_slice(&sig)
            .map_err(|_| Refusal::Forged)?;
        if now_secs >= exp_secs {
            return Err(Refusal::Expired);
        }
        Ok(Pass {
            chat_id,
            exp_secs,
            sig: hex(&sig),
        })
    }
}

/// A checked link: what the pages need to link to one another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    pub chat_id: ChatId,
    pub exp_secs: i64,
    /// The signature, in lowercase hex.
    pub sig: String,
}

impl Pass {
    /// `exp=…&sig=…`, for the links between pages.
    pub fn query(&self) -> String {
        format!("exp={}&sig={}", self.exp_secs, self.sig)
    }
}

/// What `/dashboard` hands out: links under the base URL, signed, each good
/// for `ttl_secs`.
#[derive(Debug, Clone)]
pub struct Links {
    base: String,
    signer: Signer,
    ttl_secs: u64,
}

impl Links {
    /// `base` is the checked `dashboard.base_url`.
    pub fn new(base: &str, signer: Signer, ttl_secs: u64) -> Links {
        Links {
            base: base.trim_end_matches('/').to_owned(),
            signer,
            ttl_secs,
        }
    }

    pub fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }

    /// The link to `chat_id`'s pages, good for the TTL from `now_secs`.
    pub fn link(&self, chat_id: ChatId, now_secs: i64) -> String {
        let ttl = i64::try_from(self.ttl_secs).expect("a checked TTL");
        let exp = now_secs.saturating_add(ttl);
        format!(
            "{}/dashboard/{chat_id}?exp={exp}&sig={}",
            self.base,
            self.signer.sign(chat_id, exp)
        )
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    text.as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [hi, lo] => Some(digit(*hi)? << 4 | digit(*lo)?),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn parts(link: &str) -> (ChatId, String, String) {
        let rest = link.split("/dashboard/").nth(1).unwrap();
        let (chat, query) = rest.split_once('?').unwrap();
        let (exp, sig) = query.split_once('&').unwrap();
        (
            chat.parse().unwrap(),
            exp.strip_prefix("exp=").unwrap().to_owned(),
            sig.strip_prefix("sig=").unwrap().to_owned(),
        )
    }

    #[test]
    fn a_link_opens_its_chat_until_it_expires() {
        let links = Links::new("https://cw.example.com/", Signer::new(b"k1"), 3600);
        let link = links.link(-1001, NOW);
        assert!(link.starts_with("https://cw.example.com/dashboard/-1001?exp="));
        let (chat, exp, sig) = parts(&link);
        let signer = Signer::new(b"k1");
        let pass = signer.check(chat, Some(&exp), Some(&sig), NOW).unwrap();
        assert_eq!((pass.chat_id, pass.exp_secs), (-1001, NOW + 3600));
        assert_eq!(pass.query(), format!("exp={exp}&sig={sig}"));
        assert!(
            signer
                .check(chat, Some(&exp), Some(&sig), NOW + 3599)
                .is_ok()
        );
        assert_eq!(
            signer.check(chat, Some(&exp), Some(&sig), NOW + 3600),
            Err(Refusal::Expired)
        );
    }

    #[test]
    fn another_chat_expiry_key_or_signature_is_refused() {
        let signer = Signer::new(b"k1");
        let (chat, exp, sig) = parts(&Links::new("http://h", signer.clone(), 60).link(42, NOW));
        let later = (NOW + 7200).to_string();
        assert_eq!(
            signer.check(43, Some(&exp), Some(&sig), NOW),
            Err(Refusal::Forged)
        );
        assert_eq!(
            signer.check(chat, Some(&later), Some(&sig), NOW),
            Err(Refusal::Forged),
            "a moved expiry"
        );
        assert_eq!(
            Signer::new(b"k2").check(chat, Some(&exp), Some(&sig), NOW),
            Err(Refusal::Forged)
        );
        let mut flipped = sig.clone().into_bytes();
        flipped[63] = if flipped[63] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(
            signer.check(chat, Some(&exp), Some(&flipped), NOW),
            Err(Refusal::Forged)
        );
        // Upper-case hex is the same signature.
        assert!(
            signer
                .check(chat, Some(&exp), Some(&sig.to_uppercase()), NOW)
                .is_ok()
        );
        for (e, s) in [
            (None, Some(sig.as_str())),
            (Some(exp.as_str()), None),
            (Some("soon"), Some(sig.as_str())),
            (Some(exp.as_str()), Some(&sig[..62])),
            (Some(exp.as_str()), Some("zz")),
        ] {
            assert_eq!(signer.check(chat, e, s, NOW), Err(Refusal::Malformed));
        }
        assert_eq!(format!("{signer:?}"), "Signer(<key redacted>)");
    }

    #[test]
    fn hex_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(unhex(&hex(&bytes)).unwrap(), bytes);
        assert_eq!(hex(&[0x0f, 0xa0]), "0fa0");
        assert!(unhex("abc").is_none() && unhex("g0").is_none());
    }
}
