//! The extractor against a corpus of posts as callers write them (links,
//! emoji, code spans, several addresses, look-alikes, base58 of the wrong
//! length, addresses inside other URLs), each with the calls it must make.
//! The corpus is `tests/posts.jsonl`, one post a line.

use callwatch_sources::extract::{ExtractConfig, Extractor};
use callwatch_sources::network::Network;
use serde::Deserialize;

#[derive(Deserialize)]
struct Post {
    name: String,
    text: String,
    links: Vec<String>,
    calls: Vec<Call>,
}

#[derive(Deserialize, Debug, PartialEq)]
struct Call {
    token: String,
    network: Network,
}

#[test]
fn every_post_of_the_corpus_makes_exactly_its_calls() {
    let extractor = Extractor::new(&ExtractConfig::default()).unwrap();
    let corpus = include_str!("posts.jsonl");
    let mut posts = 0;
    for line in corpus.lines().filter(|l| !l.trim().is_empty()) {
        let post: Post = serde_json::from_str(line).unwrap();
        let links: Vec<&str> = post.links.iter().map(String::as_str).collect();
        let got: Vec<Call> = extractor
            .extract(&post.text, &links)
            .into_iter()
            .map(|f| Call {
                token: f.token.to_string(),
                network: f.network,
            })
            .collect();
        assert_eq!(got, post.calls, "post `{}`: {:?}", post.name, post.text);
        posts += 1;
    }
    assert!(posts >= 30, "the corpus has {posts} posts");
}
