//! Alerts with a chart, against the fake Bot API: sent as `sendPhoto`
//! with the alert as the caption, the PNG arriving whole; counted against
//! the limits as text is; a refused chart sent again as text, never lost;
//! a text too long for a caption sent as text.

use std::sync::Arc;
use std::time::Duration;

use callwatch_charts::{Chart, HEIGHT, Point, WIDTH, render};
use callwatch_telegram::format::MAX_CAPTION_UNITS;
use callwatch_telegram::sender::{Photo, Report};
use callwatch_testkit::fake_bot::{Answer, FakeBotApi, Fault, Limits};

mod common;
use common::{TOKEN, alert, reports_until, start};

fn chart() -> Photo {
    let points = [
        Point {
            at_ns: 3_600_000_000_000,
            value: 300.0,
        },
        Point {
            at_ns: 7_200_000_000_000,
            value: 1_100.0,
        },
    ];
    render(&Chart {
        title: "a token reached 10x",
        call: Point {
            at_ns: 0,
            value: 100.0,
        },
        points: &points,
        thresholds: &[2.0, 5.0, 10.0],
    })
    .unwrap()
    .into()
}

/// Width and height of a PNG, decoding it whole.
fn decoded_size(bytes: &[u8]) -> (u32, u32) {
    let mut reader = png::Decoder::new(bytes).read_info().expect("a PNG header");
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).expect("PNG pixel data");
    (info.width, info.height)
}

#[tokio::test]
async fn a_chart_arrives_as_a_photo_captioned_by_its_alert() {
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    fake.enforce(Limits::default());
    let (sender, mut reports, task) = start(&fake, |_| {}).await;
    let png = chart();
    for i in 0..3 {
        sender
            .try_send(alert(7, i).with_photo(Arc::clone(&png)))
            .unwrap();
    }
    sender.try_send(alert(7, 3)).unwrap();
    reports_until(&mut reports, Duration::from_secs(10), |r| r.len() == 4).await;
    let received = fake.received();
    assert_eq!(received.len(), 4, "{received:?}");
    for (i, r) in received.iter().enumerate() {
        assert_eq!(r.text, format!("alert {i} to 7"));
        assert!(matches!(r.answer, Answer::Sent { .. }));
        assert_eq!(r.parse_mode.as_deref(), Some("HTML"));
    }
    for r in &received[..3] {
        let photo = r.photo.as_deref().expect("sent as a photo");
        assert_eq!(photo, png.as_slice(), "the bytes arrive whole");
        assert_eq!(decoded_size(photo), (WIDTH, HEIGHT));
    }
    assert_eq!(received[3].photo, None);
    // Photos and text share the chat's limit of one a second.
    assert_eq!(fake.over_limit(), 0);
    assert_eq!(fake.max_in_window(Duration::from_secs(1)).per_chat, 1);
    task.close(Duration::from_secs(5)).await;
}

/// The fake's limits count a photo as a message: straight after a photo,
/// a text to the same chat is over Telegram's one a second.
#[tokio::test]
async fn the_fake_counts_a_photo_against_the_chat_limit() {
    use teloxide::prelude::Requester;
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    fake.enforce(Limits::default());
    let bot = teloxide::Bot::new(TOKEN).set_api_url(fake.url().parse().unwrap());
    let file = teloxide::types::InputFile::memory(chart().as_ref().clone()).file_name("c.png");
    bot.send_photo(teloxide::types::ChatId(5), file)
        .await
        .expect("the photo is taken");
    let text = bot
        .send_message(teloxide::types::ChatId(5), "right after")
        .await;
    assert!(text.is_err(), "{text:?}");
    assert_eq!(fake.over_limit(), 1);
    let answers: Vec<Answer> = fake.received().iter().map(|r| r.answer).collect();
    assert!(matches!(
        answers[..],
        [Answer::Sent { .. }, Answer::Refused { status: 429 }]
    ));
}

#[tokio::test]
async fn a_refused_chart_is_sent_again_as_text() {
    let fake = FakeBotApi::start(TOKEN).await.unwrap();
    fake.fail_chat(8, Fault::BadRequest, 1);
    let (sender, mut reports, task) = start(&fake, |_| {}).await;
    sender.try_send(alert(8, 0).with_photo(chart())).unwrap();
    let got = reports_until(&mut reports, Duration::from_secs(10), |r| !r.is_empty()).await;
    assert!(matches!(got[0], Report::Sent { chat_id: 8, .. }), "{got:?}");
    let received = fake.received();
    assert_eq!(received.len(), 2, "{received:?}");
    assert_eq!(received[0].answer, Answer::Refused { status: 400 });
    assert!(received[0].photo.is_some());
    assert_eq!(received[1].photo, None);
    assert_eq!(received[1].text, "alert 0 to 8");
    let stats = task.close(Duration::from_secs(5)).await.stats;
    assert_eq!((stats.photos_refused, stats.failed, stats.sent), (1, 0, 1));
}

#[tokio::test]
async fn an_alert_too_long_for_a_caption_goes_as_text() {
    let mut long = alert(9, 0);
    long.text = format!("<b>{}</b>", "x".repeat(MAX_CAPTION_UNITS + 1));
    assert_eq!(long.clone().with_photo(chart()).photo, None);
    let mut fits = alert(9, 1);
    fits.text = format!("<b>{}</b>", "&amp;".repeat(MAX_CAPTION_UNITS));
    assert!(fits.with_photo(chart()).photo.is_some());
}
