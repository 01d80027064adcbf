//! Credits from the chat: a grant handled twice credits once, and a grant
//! or resolve whose announcement failed says how to finish it.

use super::*;

#[test]
fn a_grant_handled_twice_credits_once_and_one_left_unannounced_names_its_id() {
    let c = bot();
    let grant = Incoming {
        message_id: 77,
        ..message(ADMIN, Some(ADMIN), None, "/grant 99 30")
    };
    c.backend().0.lock().announce_fails = true;
    let r = reply(&c, &grant);
    assert!(
        r.contains("Granted 30 days to <code>99</code>")
            && r.contains("could not tell the alerting engine")
            && r.contains("<code>/grant 99 30 7:77</code>"),
        "{r}"
    );
    c.backend().0.lock().announce_fails = false;
    // Telegram delivers the same update again; the admin sends the
    // command the reply gave.
    let r = reply(&c, &grant);
    assert!(!r.contains("could not tell"), "{r}");
    let again = Incoming {
        message_id: 78,
        ..message(ADMIN, Some(ADMIN), None, "/grant 99 30 7:77")
    };
    assert!(reply(&c, &again).contains("Granted 30 days"));
    assert_eq!(c.backend().0.lock().grants, vec![(ADMIN, 99, 30)]);
    assert_eq!(c.backend().0.lock().grant_ids, vec!["7:77".to_owned()]);
    // Another message is another grant.
    let other = Incoming {
        message_id: 79,
        ..message(ADMIN, Some(ADMIN), None, "/grant 99 30")
    };
    reply(&c, &other);
    assert_eq!(c.backend().0.lock().grant_ids, ["7:77", "7:79"]);
    let bad = message(ADMIN, Some(ADMIN), None, "/grant 99 30 <b>");
    let r = reply(&c, &bad);
    assert!(r.contains("&lt;b&gt; is not a grant id"), "{r}");
}

#[test]
fn a_resolve_left_unannounced_says_so_and_how_to_finish() {
    let c = bot();
    let sig = "5".repeat(88);
    {
        let mut f = c.backend().0.lock();
        f.announce_fails = true;
        f.unmatched = vec![UnmatchedView {
            signature: sig.clone(),
            reason: "underpaid".to_owned(),
            received_sol: "0.2".to_owned(),
            chat_id: None,
        }];
    }
    let r = reply(
        &c,
        &message(ADMIN, Some(ADMIN), None, &format!("/resolve {sig} 42 week")),
    );
    assert!(
        r.contains("Credited to <code>42</code>") && r.contains("send the same /resolve again"),
        "{r}"
    );
}
