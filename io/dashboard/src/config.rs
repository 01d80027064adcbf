//! The `[dashboard]` section of the service's settings.

use callwatch_common::secret::Secret;
use serde::{Deserialize, Serialize};

/// The shortest signing key taken from the settings, in bytes: HMAC-SHA256
/// gains nothing from more than its 32-byte output, and a short one could
/// be guessed.
pub const MIN_SECRET_BYTES: usize = 32;

/// The longest a link may stay valid: a link leaks with any chat it is
/// forwarded to, so it should not outlive a week.
pub const MAX_LINK_TTL_SECS: u64 = 7 * 24 * 3600;

/// The dashboard: where it is reached, and its links.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DashboardConfig {
    /// The public http(s) URL that reaches this process's `http.listen`
    /// (through a reverse proxy, say); `/dashboard`'s links start with it.
    /// Empty turns the dashboard off: no pages, and `/dashboard` says so
    /// [default: empty].
    pub base_url: String,
    /// The key links are signed with (HMAC-SHA256), at least 32 bytes.
    /// Empty: one is made at first start and kept in Redis
    /// (`{prefix}dashboard:key`), so every process on that Redis signs and
    /// checks alike. Changing it voids every link given. Never printed
    /// [default: empty].
    pub secret: Secret,
    /// How long a link from `/dashboard` opens the pages, 60 s to 7 days
    /// [default: 86400, a day].
    pub link_ttl_secs: u64,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            base_url: String::new(),
            secret: Secret::default(),
            link_ttl_secs: 24 * 3600,
        }
    }
}

impl DashboardConfig {
    /// Whether the dashboard is served.
    pub fn enabled(&self) -> bool {
        !self.base_url.is_empty()
    }

    /// Every value that cannot work, named.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.enabled() {
            match url::Url::parse(&self.base_url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {
                    if u.query().is_some() || u.fragment().is_some() {
                        problems.push(format!(
                            "dashboard.base_url `{}`: no query or fragment, please",
                            self.base_url
                        ));
                    }
                }
                _ => problems.push(format!(
                    "dashboard.base_url `{}` is not an http(s) URL",
                    self.base_url
                )),
            }
        }
        if !self.secret.is_empty() && self.secret.expose().len() < MIN_SECRET_BYTES {
            problems.push(format!(
                "dashboard.secret is shorter than {MIN_SECRET_BYTES} bytes \
                 (leave it empty to have one made)"
            ));
        }
        if !(60..=MAX_LINK_TTL_SECS).contains(&self.link_ttl_secs) {
            problems.push(format!(
                "dashboard.link_ttl_secs {} is outside 60..={MAX_LINK_TTL_SECS}",
                self.link_ttl_secs
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_every_problem_named() {
        let d = DashboardConfig::default();
        assert!(!d.enabled() && d.problems().is_empty());
        let bad = DashboardConfig {
            base_url: "ftp://x".to_owned(),
            secret: Secret::new("short"),
            link_ttl_secs: 0,
        };
        let text = bad.problems().join("\n");
        for needle in ["base_url", "secret", "link_ttl_secs"] {
            assert!(text.contains(needle), "{needle} in {text}");
        }
        let good = DashboardConfig {
            base_url: "https://cw.example.com/".to_owned(),
            secret: Secret::new("k".repeat(32)),
            link_ttl_secs: 3600,
        };
        assert!(good.enabled() && good.problems().is_empty());
    }
}
