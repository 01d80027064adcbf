//! Who may do what: in a group only its administrators change its
//! settings or subscription, asked of Telegram once a minute per person.

use std::sync::atomic::Ordering;

use super::*;

const GROUP: ChatId = -1_001_234;
const MEMBER: i64 = 5;
const GROUP_ADMIN: i64 = 6;

/// A bot in whose group `GROUP_ADMIN` is an administrator.
fn group_bot() -> Commands<Mem> {
    let c = subscribed_bot();
    c.backend()
        .0
        .lock()
        .admins_of
        .insert((GROUP, GROUP_ADMIN), true);
    c
}

fn lookups(c: &Commands<Mem>) -> usize {
    c.backend().0.lock().member_lookups
}

#[test]
fn in_a_group_only_its_administrators_change_its_settings_or_subscription() {
    let c = group_bot();
    c.backend().0.lock().plans = vec![PlanView {
        name: "week".to_owned(),
        days: 7,
        price_sol: "0.25".to_owned(),
    }];
    for cmd in [
        "/min_callers 3",
        "/lookback 30",
        "/mcap 10k 1m",
        "/follow -1001",
        "/unfollow -1001",
        "/subscribe week",
    ] {
        let r = reply(&c, &message(GROUP, Some(MEMBER), None, cmd));
        assert_eq!(r, NOT_AN_ADMIN, "{cmd}");
    }
    assert!(events(&c).is_empty(), "a member changed nothing");
    // Questions are for everyone, and ask Telegram nothing.
    let before = lookups(&c);
    for cmd in [
        "/status",
        "/settings",
        "/following",
        "/tracked",
        "/top",
        "/subscribe",
    ] {
        let r = reply(&c, &message(GROUP, Some(MEMBER), None, cmd));
        assert_ne!(r, NOT_AN_ADMIN, "{cmd}");
    }
    assert_eq!(lookups(&c), before);
    // The group's administrator may.
    let r = reply(
        &c,
        &message(GROUP, Some(GROUP_ADMIN), None, "/min_callers 3"),
    );
    assert!(r.contains("Done"), "{r}");
    let r = reply(
        &c,
        &message(GROUP, Some(GROUP_ADMIN), None, "/subscribe week"),
    );
    assert!(r.contains("Send exactly 0.25 SOL"), "{r}");
    assert_eq!(events(&c).len(), 1);
    assert_eq!(events(&c)[0].0, GROUP);
}

#[test]
fn the_group_writing_as_itself_may_and_a_channel_or_nobody_may_not() {
    let c = group_bot();
    // An anonymous administrator: Telegram's placeholder user, on behalf
    // of the group itself.
    let anonymous = message(GROUP, Some(1_087_968_824), Some(GROUP), "/min_callers 4");
    assert!(reply(&c, &anonymous).contains("Done"));
    assert_eq!(lookups(&c), 0, "no lookup for the group itself");
    // A linked channel's post in the group is not the group.
    let channel = message(GROUP, Some(777_000), Some(-1_009_999), "/min_callers 5");
    assert_eq!(reply(&c, &channel), NOT_AN_ADMIN);
    let nobody = message(GROUP, None, Some(-1_009_999), "/min_callers 5");
    assert_eq!(reply(&c, &nobody), NOT_AN_ADMIN);
    assert_eq!(events(&c).len(), 1);
}

#[test]
fn in_a_private_chat_its_user_owns_it_and_nothing_is_asked() {
    let c = subscribed_bot();
    let r = reply(&c, &message(CHAT, Some(CHAT), None, "/min_callers 3"));
    assert!(r.contains("Done"), "{r}");
    assert_eq!(lookups(&c), 0);
}

#[test]
fn a_failed_lookup_refuses_and_asks_to_try_again_and_is_not_kept() {
    let counters = Arc::new(RightsCounters::default());
    let c = group_bot().counting_rights(Arc::clone(&counters));
    c.backend().0.lock().members_down = true;
    let req = message(GROUP, Some(GROUP_ADMIN), None, "/lookback 30");
    assert_eq!(reply(&c, &req), CANNOT_CHECK);
    assert!(events(&c).is_empty(), "refused, not allowed");
    c.backend().0.lock().members_down = false;
    assert!(reply(&c, &req).contains("Done"), "asked again, now allowed");
    assert_eq!(lookups(&c), 2);
    assert_eq!(counters.lookups.load(Ordering::Relaxed), 2);
    assert_eq!(counters.lookup_failures.load(Ordering::Relaxed), 1);
}

#[test]
fn a_flood_of_commands_asks_telegram_once_a_minute_per_person() {
    let counters = Arc::new(RightsCounters::default());
    let c = group_bot().counting_rights(Arc::clone(&counters));
    for i in 0..50 {
        let at = NOW + i * NANOS_PER_SEC;
        let r = reply_at(
            &c,
            &message(GROUP, Some(MEMBER), None, "/min_callers 3"),
            at,
        );
        assert_eq!(r, NOT_AN_ADMIN);
        let r = reply_at(
            &c,
            &message(GROUP, Some(GROUP_ADMIN), None, "/min_callers 3"),
            at,
        );
        assert!(r.contains("Done"), "{r}");
    }
    assert_eq!(lookups(&c), 2, "one per person");
    assert_eq!(counters.refused.load(Ordering::Relaxed), 50);
    // A minute on, the answer is asked again: the administrator was
    // demoted meanwhile.
    c.backend()
        .0
        .lock()
        .admins_of
        .insert((GROUP, GROUP_ADMIN), false);
    let later = NOW + ADMIN_CACHE_NANOS;
    let r = reply_at(
        &c,
        &message(GROUP, Some(GROUP_ADMIN), None, "/min_callers 2"),
        later,
    );
    assert_eq!(r, NOT_AN_ADMIN);
    assert_eq!(lookups(&c), 3);
}
