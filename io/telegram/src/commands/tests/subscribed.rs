//! Settings commands are for subscribed chats; reading stays open to all.

use super::*;

#[test]
fn settings_commands_are_refused_without_a_subscription_and_reading_stays_open() {
    let c = bot();
    let changes = [
        "/min_callers 3",
        "/lookback 30",
        "/mcap 50k 5m",
        "/follow -1001",
        "/unfollow -1001",
    ];
    for cmd in changes {
        let r = ask(&c, cmd);
        assert!(
            r.contains("Settings are for subscribers") && r.contains("/subscribe"),
            "{cmd}: {r}"
        );
    }
    subscribe_until(&c, NOW);
    for cmd in changes {
        let r = ask(&c, cmd);
        assert!(
            r.contains("expired 2025-11-25 10:00 UTC") && r.contains("/subscribe to renew"),
            "{cmd}: {r}"
        );
    }
    assert!(events(&c).is_empty(), "nothing recorded: {:?}", events(&c));
    for (cmd, reply) in [
        ("/status", "Status"),
        ("/settings", "Callers needed: 2"),
        ("/following", "You follow every channel"),
        ("/tracked", "Nothing is tracked"),
        ("/top", "No calls"),
        ("/help", "/min_callers"),
    ] {
        assert!(ask(&c, cmd).contains(reply), "{cmd} is open to all");
    }
    // Bad arguments are explained first, subscribed or not.
    assert!(ask(&c, "/min_callers 0").contains("Usage: <code>/min_callers N</code>"));
    // An admin may try settings in their own chat; not in another's.
    let r = ask_in(&c, ADMIN, ADMIN, "/min_callers 3")
        .expect("reply")
        .text;
    assert!(r.contains("Done"), "{r}");
    let r = ask_as(&c, ADMIN, "/min_callers 3").expect("reply").text;
    assert!(r.contains("/subscribe to renew"), "{r}");
    subscribe_until(&c, NOW + 1);
    assert!(ask(&c, "/min_callers 3").contains("Done"));
    assert_eq!(
        events(&c).iter().map(|e| e.0).collect::<Vec<_>>(),
        [ADMIN, CHAT]
    );
}
