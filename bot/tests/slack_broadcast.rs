//! The notifier's Slack broadcast: one post per key in the incident channel, also when a post
//! hits a rate limit or an ambiguous server error.

mod common;

use drbot::slack::sync::SlackBroadcast;
use drbot_e2e::fake_slack::{FakeSlack, Fault};
use notifier::chat::ChatBroadcast;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_posts_are_idempotent() {
    let slack = FakeSlack::start("xoxb-t");
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("d.db").display());
    let text = common::config_text(&url, 1, "30m", 0, "m").replace(
        "[store]",
        &format!(
            "[slack]\nsigning_secret = \"s\"\nbot_token = \"xoxb-t\"\napi_base_url = \"{}\"\nincident_channel = \"CINC\"\n\n[store]",
            slack.base_url()
        ),
    );
    let settings = common::settings(&text);
    let store = drbot::store::Store::connect(&url, 4).await.unwrap();
    let app = drbot::app::App::new(settings, store);
    let b = SlackBroadcast(app);
    assert_eq!(b.platform(), "slack");
    slack.inject("chat.postMessage", Fault::ServerErrorAfterActing);
    let ts = b
        .post_status("incident-1:update-1", "DR activated: <us-west-2> serving")
        .await
        .unwrap();
    let again = b
        .post_status("incident-1:update-1", "DR activated: <us-west-2> serving")
        .await
        .unwrap();
    assert_eq!(ts, again);
    let msgs = slack.messages("CINC");
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(msgs[0].blocks.to_string().contains("&lt;us-west-2&gt;"));
    b.post_status("incident-1:update-2", "monitoring")
        .await
        .unwrap();
    assert_eq!(slack.messages("CINC").len(), 2);
}
