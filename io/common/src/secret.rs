//! Secrets in settings: a token or password ([`Secret`]) and a URL or
//! connection string that may carry one ([`SecretUrl`]). Their `Debug` and
//! `Display` never show the secret, so a settings struct holding them can
//! derive `Debug` and be logged whole; the value itself is reached only
//! through `expose`, by the client that needs it.
//!
//! Both serialise as the plain value (a settings file round-trips);
//! printing settings as TOML replaces them first (`callwatch config`).

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::conninfo;

/// What stands for a masked value.
pub const MASK: &str = "***";

/// A token or password: shown as `<redacted>` (or `<empty>`), never as
/// itself.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the client that sends it and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "<empty>"
        } else {
            "<redacted>"
        })
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret::new(value)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl FromStr for Secret {
    type Err = Infallible;

    fn from_str(s: &str) -> Result<Secret, Infallible> {
        Ok(Secret::new(s))
    }
}

/// A URL (`redis://`, `postgres://`, an RPC endpoint) or a PostgreSQL
/// `keyword = value` string that may hold a password or an API key: shown
/// through [`mask_url`], never as itself.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> SecretUrl {
        SecretUrl(url.into())
    }

    /// The URL itself, for the client that connects and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The URL with its secrets replaced, for printing.
    pub fn masked(&self) -> String {
        mask_url(&self.0)
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.masked(), f)
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl From<&str> for SecretUrl {
    fn from(url: &str) -> SecretUrl {
        SecretUrl::new(url)
    }
}

impl From<String> for SecretUrl {
    fn from(url: String) -> SecretUrl {
        SecretUrl(url)
    }
}

impl FromStr for SecretUrl {
    type Err = Infallible;

    fn from_str(s: &str) -> Result<SecretUrl, Infallible> {
        Ok(SecretUrl::new(s))
    }
}

/// Query parameters and connection keywords whose values are shown: they
/// say where and how to connect and hold no secret. Every other value is
/// masked, so an API key under any name (`api-key`, `token`, `key`) is not
/// shown.
const SHOWN: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "sslmode",
    "sslrootcert",
    "sslnegotiation",
    "connect_timeout",
    "application_name",
    "target_session_attrs",
    "channel_binding",
    "protocol",
];

fn shown(key: &str) -> bool {
    SHOWN.iter().any(|k| k.eq_ignore_ascii_case(key))
}

/// A URL or connection string with its secrets replaced by `***`: the
/// password of its user info; the values of its query parameters but
/// those of [`SHOWN`]; its fragment; and, for `http(s)` (an RPC
/// provider's key may be a path segment: `/v2/KEY`), its path. In the
/// `keyword = value` form every value but those of [`SHOWN`]; a string
/// that is neither form is masked whole.
pub fn mask_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => mask_url_form(scheme, rest),
        None if url.is_empty() => String::new(),
        None => mask_key_values(url),
    }
}

fn mask_url_form(scheme: &str, rest: &str) -> String {
    // The last `@` ends the user info; one in a query or path makes more
    // of the URL count as user info, which only masks more.
    let (userinfo, rest) = match rest.rsplit_once('@') {
        Some((userinfo, rest)) => (Some(userinfo), rest),
        None => (None, rest),
    };
    let (rest, fragment) = match rest.split_once('#') {
        Some((rest, _)) => (rest, Some(MASK)),
        None => (rest, None),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let (host, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let mut out = format!("{scheme}://");
    if let Some(userinfo) = userinfo {
        match userinfo.split_once(':') {
            Some((user, _)) => out.push_str(&format!("{user}:{MASK}@")),
            None => out.push_str(&format!("{userinfo}@")),
        }
    }
    out.push_str(host);
    let http = scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https");
    out.push_str(if http && path.len() > 1 { "/***" } else { path });
    if let Some(query) = query {
        out.push('?');
        out.push_str(&mask_query(query));
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

fn mask_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if shown(key) => format!("{key}={value}"),
            Some((key, _)) => format!("{key}={MASK}"),
            None => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn mask_key_values(s: &str) -> String {
    let Some(pairs) = conninfo::pairs(s) else {
        return format!("<not a connection string, {MASK}>");
    };
    pairs
        .iter()
        .map(|p| {
            if shown(p.key) {
                s[p.span.clone()].to_owned()
            } else {
                format!("{}={MASK}", p.key)
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_keys_are_masked_in_every_form() {
        for (url, masked) in [
            (
                "redis://default:s3cret@cache:6379/0",
                "redis://default:***@cache:6379/0",
            ),
            (
                "rediss://:s3cret@cache:6380/2",
                "rediss://:***@cache:6380/2",
            ),
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            (
                "postgres://cw:pw@db:5432/cw?sslmode=verify-full&password=pw2",
                "postgres://cw:***@db:5432/cw?sslmode=verify-full&password=***",
            ),
            (
                "https://rpc.example/?api-key=XYZ",
                "https://rpc.example/?api-key=***",
            ),
            (
                "https://user:pw@rpc.example.com/v2/KEY123?api-key=KEY456#frag",
                "https://user:***@rpc.example.com/***?api-key=***#***",
            ),
            (
                "https://api.mainnet-beta.solana.com",
                "https://api.mainnet-beta.solana.com",
            ),
            (
                "host=db user=cw password='hunter 2' sslmode=require",
                "host=db user=cw password=*** sslmode=require",
            ),
            (
                "host=db password=x secret=y",
                "host=db password=*** secret=***",
            ),
            ("password='open", "<not a connection string, ***>"),
            ("", ""),
        ] {
            assert_eq!(mask_url(url), masked, "{url}");
        }
    }

    #[test]
    fn debug_and_display_never_show_the_secret() {
        let token = Secret::new("123456:AAE-very-secret");
        let url = SecretUrl::new("redis://u:s3cret@cache:6379/0?token=XYZ");
        let shown = format!("{token:?} {token} {url:?} {url}");
        for secret in ["AAE-very-secret", "s3cret", "XYZ"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert_eq!(format!("{:?}", Secret::default()), "<empty>");
        assert_eq!(token.expose(), "123456:AAE-very-secret");
    }

    #[test]
    fn they_serialise_as_the_plain_value() {
        let url: SecretUrl = serde_json::from_str("\"redis://u:p@h/0\"").unwrap();
        assert_eq!(url.expose(), "redis://u:p@h/0");
        assert_eq!(serde_json::to_string(&url).unwrap(), "\"redis://u:p@h/0\"");
    }
}
