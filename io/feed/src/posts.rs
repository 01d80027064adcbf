//! Channel posts, the raw input of calls, as they wait in
//! `{prefix}posts:raw`.
//!
//! # The format, for readers of channels the bot cannot join
//!
//! An entry has one field, `post`, whose value is a JSON object:
//!
//! | key | type | |
//! | --- | --- | --- |
//! | `chat_id` | integer | the channel's id (`-100…` for channels) |
//! | `message_id` | integer | the post's id in the channel |
//! | `date` | integer or string | when it was posted: Unix seconds, or RFC 3339 |
//! | `text` | string | the text or caption, as posted (optional) |
//! | `links` | array of strings | URLs the post links that are not in its text (optional) |
//! | `edited` | boolean | an edit of a post sent before (optional, default false) |
//! | `chat_title`, `chat_username` | string | the channel's name, shown in alerts (optional) |
//!
//! ```text
//! XADD posts:raw * post {"chat_id":-1001234567890,"message_id":42,"date":1796000000,"text":"CA: JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN","chat_title":"Alpha Calls"}
//! ```
//!
//! Add entries with an automatic id: the entry's time is when the post
//! arrived, and a post dated more than `max_future_skew_secs` after it is
//! set aside. callwatch reads the stream through a consumer group, calls
//! each address a post names once (an edit calls only the addresses it
//! adds), and acknowledges the entry once every call is published or set
//! aside with its reason in `{prefix}events:dead`.

use engine::time::{self, NANOS_PER_SEC, Nanos};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The one field of a raw-posts entry.
pub const POST_FIELD: &str = "post";

/// One channel post.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Post {
    pub chat_id: i64,
    pub message_id: i64,
    #[serde(with = "date")]
    pub date: Nanos,
    #[serde(default)]
    pub text: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub edited: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_username: Option<String>,
}

/// The longest post text read, in bytes: a post longer than Telegram
/// allows (4,096 characters, 16 KiB at most in UTF-8) is not a post.
pub const MAX_POST_BYTES: usize = 64 * 1024;

impl Post {
    /// A post from an entry's value, or why it is none.
    pub fn decode(value: &[u8]) -> Result<Post, String> {
        if value.len() > MAX_POST_BYTES {
            return Err(format!(
                "the post is {} bytes, over the {MAX_POST_BYTES}-byte bound",
                value.len()
            ));
        }
        let post: Post = serde_json::from_slice(value).map_err(|e| format!("not a post: {e}"))?;
        if post.chat_id == 0 {
            return Err("chat_id must not be 0".to_owned());
        }
        Ok(post)
    }

    /// The entry value of this post.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("posts serialise")
    }

    /// Why the post cannot be trusted to be dated when it says, if it is
    /// dated more than `skew` after `arrived` (its entry's time).
    pub fn from_the_future(&self, arrived: Nanos, skew: Nanos) -> Option<String> {
        (self.date > arrived.saturating_add(skew)).then(|| {
            format!(
                "dated in the future: {} is {} s after the post reached the stream ({}), \
                 more than the {} s allowed",
                time::format_rfc3339(self.date),
                (self.date - arrived) / NANOS_PER_SEC,
                time::format_rfc3339(arrived),
                skew / NANOS_PER_SEC
            )
        })
    }
}

/// A date as Unix seconds or RFC 3339, written as RFC 3339.
mod date {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Nanos, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&time::format_rfc3339(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Nanos, D::Error> {
        use serde::de::Error;
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Date {
            Secs(i64),
            Text(String),
        }
        match Date::deserialize(d)? {
            Date::Secs(s) => s
                .checked_mul(NANOS_PER_SEC)
                .ok_or_else(|| D::Error::custom("date is out of range")),
            Date::Text(t) => {
                time::parse_rfc3339(&t).map_err(|e| D::Error::custom(format!("date: {e}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posts_round_trip_and_take_either_date() {
        let p = Post::decode(
            br#"{"chat_id":-1001,"message_id":7,"date":1796000000,"text":"hi","chat_title":"A"}"#,
        )
        .unwrap();
        assert_eq!(p.date, 1_796_000_000 * NANOS_PER_SEC);
        assert_eq!(Post::decode(p.encode().as_bytes()).unwrap(), p);
        let q =
            Post::decode(br#"{"chat_id":5,"message_id":1,"date":"2026-11-25T10:00:00Z"}"#).unwrap();
        assert_eq!(q.text, "");
        assert!(!q.edited && q.links.is_empty());
    }

    #[test]
    fn bad_posts_say_why() {
        for (value, why) in [
            (&br#"{"chat_id":0,"message_id":1,"date":1}"#[..], "chat_id"),
            (br#"{"chat_id":1,"message_id":1}"#, "date"),
            (br#"{"chat_id":1,"message_id":1,"date":"soon"}"#, "date"),
            (
                br#"{"chat_id":1,"message_id":1,"date":1,"extra":2}"#,
                "extra",
            ),
            (b"[]", "not a post"),
        ] {
            let e = Post::decode(value).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        let long = vec![b' '; MAX_POST_BYTES + 1];
        assert!(Post::decode(&long).unwrap_err().contains("bound"));
    }

    #[test]
    fn a_post_dated_past_the_skew_is_from_the_future() {
        let p = Post::decode(br#"{"chat_id":1,"message_id":1,"date":1000}"#).unwrap();
        let arrived = 900 * NANOS_PER_SEC;
        assert_eq!(p.from_the_future(arrived, 100 * NANOS_PER_SEC), None);
        let why = p.from_the_future(arrived, 99 * NANOS_PER_SEC).unwrap();
        assert!(
            why.contains("dated in the future") && why.contains("100 s"),
            "{why}"
        );
    }
}
