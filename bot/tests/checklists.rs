//! Checklists on SQLite and on a real PostgreSQL: `/dr checklist` lists the built-in and config
//! checklists, `/dr checklist <name>` creates an instance, ticks toggle through the store with a
//! `checklist.tick` audit row each (in the same transaction), the chat-message lookup that
//! guards clicks, the click path's refusals, and config checks of `[[checklists]]`.

mod common;

use common::*;
use drbot::{
    checklists::tick::{TickClick, click},
    dispatch,
    reply::{Reply, UserError},
    store::checklists::{ChecklistMessage, Toggle},
};

async fn ticks(b: Backend) {
    let env = env(b).await;
    let app = &env.app;
    let Reply::Checklists { checklists } =
        dispatch::handle(app, &cli(app, "alice"), "/dr checklist").await
    else {
        panic!("no list");
    };
    let names: Vec<&str> = checklists.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "during-failover",
            "post-failover",
            "pre-failover",
            "recovery-to-primary"
        ]
    );
    let r = dispatch::handle(app, &cli(app, "alice"), "/dr checklist during-failover").await;
    let Reply::Checklist(v) = r else {
        panic!("{r:?}")
    };
    assert_eq!(v.instance.title, "During Failover");
    assert_eq!(v.instance.items.len(), 5);
    assert_eq!(v.instance.created_by, "alice");
    let id = v.instance.id;

    let bob = slack(app, "UBOB");
    assert_eq!(
        app.store
            .toggle_tick(id, "stop-writes", &bob)
            .await
            .unwrap(),
        Toggle::Ticked
    );
    assert_eq!(
        app.store
            .toggle_tick(id, "promote-db", &cli(app, "alice"))
            .await
            .unwrap(),
        Toggle::Ticked
    );
    assert_eq!(
        app.store
            .toggle_tick(id, "stop-writes", &bob)
            .await
            .unwrap(),
        Toggle::Unticked
    );
    assert_eq!(
        app.store.toggle_tick(id, "nope", &bob).await.unwrap(),
        Toggle::UnknownItem
    );
    assert_eq!(
        app.store
            .toggle_tick(id + 100, "stop-writes", &bob)
            .await
            .unwrap(),
        Toggle::UnknownInstance
    );
    assert!(
        app.store
            .toggle_tick(id, "stop-writes", &slack(app, "UNOBODY"))
            .await
            .is_err()
    );
    let v = app.store.checklist(id).await.unwrap().unwrap();
    assert_eq!(v.done(), 1);
    assert_eq!(v.tick("promote-db").unwrap().ticked_by, "alice");
    assert!(v.tick("stop-writes").is_none());

    app.audit.flush().await.unwrap();
    let rows = app.store.audit_rows(None, 100).await.unwrap();
    let ticks: Vec<_> = rows
        .iter()
        .filter(|r| r.action == "checklist.tick")
        .collect();
    assert_eq!(ticks.len(), 3, "{ticks:?}");
    let mut ticks = ticks;
    ticks.sort_by_key(|r| r.seq);
    assert_eq!(ticks[0].person.as_deref(), Some("bob"));
    assert_eq!(ticks[0].platform, "slack");
    let d: serde_json::Value = serde_json::from_str(&ticks[2].detail).unwrap();
    assert_eq!(d["item"], "stop-writes");
    assert_eq!(d["ticked"], false);
    assert_eq!(d["checklist"], "during-failover");
    assert!(app.store.audit_verify().await.unwrap().problems.is_empty());

    // Messages: a click counts only on a message recorded for the instance it names.
    let m = ChecklistMessage {
        channel: "C1".into(),
        message_id: "111.222".into(),
        instance: id,
        part: 0,
    };
    app.store
        .record_checklist_message("slack", &m)
        .await
        .unwrap();
    app.store
        .record_checklist_message("slack", &m)
        .await
        .unwrap();
    assert_eq!(
        app.store
            .checklist_message("slack", "C1", "111.222")
            .await
            .unwrap(),
        Some(m.clone())
    );
    assert_eq!(
        app.store
            .checklist_message("discord", "C1", "111.222")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        app.store.checklist_messages("slack", id).await.unwrap(),
        [m]
    );

    let tc = TickClick::parse(&TickClick::value(id, "scale-up")).unwrap();
    let r = click(app, &bob, "slack", "C1", "111.222", &tc).await;
    assert!(
        matches!(&r, Reply::Ticked { ticked: true, item, .. } if item == "scale-up"),
        "{r:?}"
    );
    let r = click(app, &bob, "slack", "C1", "999.000", &tc).await;
    assert!(
        matches!(r, Reply::Refused(UserError::ForeignButton)),
        "{r:?}"
    );
    let r = click(app, &slack(app, "UNOBODY"), "slack", "C1", "111.222", &tc).await;
    assert!(
        matches!(r, Reply::Refused(UserError::UnknownAccount)),
        "{r:?}"
    );
    let other = TickClick::parse(&TickClick::value(id + 1, "scale-up")).unwrap();
    let r = click(app, &bob, "slack", "C1", "111.222", &other).await;
    assert!(
        matches!(r, Reply::Refused(UserError::ForeignButton)),
        "{r:?}"
    );
    assert_eq!(app.store.checklist(id).await.unwrap().unwrap().done(), 2);

    // A click on drbot's Slack post that came before the post was recorded (the record is
    // still being written): the post's claim in `outbound` names the message, so it counts;
    // another message, or a post still in flight past 2 s, does not.
    let outbound = |key: &str, message: Option<&str>| {
        sqlx::query(
            "INSERT INTO outbound (key, platform, channel, created_at, message_id) \
             VALUES ($1, 'slack', 'C2', 0, $2)",
        )
        .bind(key.to_string())
        .bind(message.map(str::to_string))
        .execute(app.store.pool())
    };
    outbound(&format!("checklist:{id}:C2"), Some("333.444"))
        .await
        .unwrap();
    let r = click(app, &bob, "slack", "C2", "333.444", &tc).await;
    assert!(matches!(r, Reply::Ticked { ticked: false, .. }), "{r:?}");
    let r = click(app, &bob, "slack", "C2", "333.445", &tc).await;
    assert!(
        matches!(r, Reply::Refused(UserError::ForeignButton)),
        "{r:?}"
    );
    let r = click(app, &bob, "slack", "C3", "333.444", &tc).await;
    assert!(
        matches!(r, Reply::Refused(UserError::ForeignButton)),
        "{r:?}"
    );
    outbound(&format!("checklist:{id}:C3"), None).await.unwrap();
    let started = std::time::Instant::now();
    let r = click(app, &bob, "slack", "C3", "333.444", &tc).await;
    assert!(
        matches!(r, Reply::Refused(UserError::ForeignButton)),
        "{r:?}"
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(1500));
}

both_backends!(ticks);

#[test]
fn config_checklists_replace_builtins_and_are_checked() {
    let base = config_text("sqlite://unused.db", 1, "30m", 0, "m");
    let s = settings(&format!(
        "{base}\n[[checklists]]\nname = \"pre-failover\"\ntitle = \"Ours\"\nitems = [{{ id = \"a\", text = \"Do A\" }}]\n"
    ));
    let pre: Vec<_> = s
        .config
        .checklists
        .iter()
        .filter(|c| c.name == "pre-failover")
        .collect();
    assert_eq!(pre.len(), 1);
    assert_eq!(pre[0].title, "Ours");
    assert_eq!(s.config.checklists.len(), 4);
    assert!(
        s.vocabulary()
            .checklists
            .contains(&"recovery-to-primary".to_string())
    );

    let bad = format!(
        "{base}\n[[checklists]]\nname = \"Bad Name\"\ntitle = \"\"\nitems = [{{ id = \"a\", text = \"x\" }}, {{ id = \"a\", text = \"y\" }}]\n\
         [[checklists]]\nname = \"empty\"\ntitle = \"E\"\nitems = []\n\
         [[checklists]]\nname = \"extra\"\ntitle = \"E\"\nitems = [{{ id = \"a\", text = \"x\", step = \"s\" }}]\n"
    );
    let parsed = drbot::config::parse_str(&bad, std::path::Path::new("."), &|_| None).unwrap();
    let p = parsed.problems.join("\n");
    for want in [
        "checklists[0].name: `Bad Name` is not a valid checklist name",
        "checklists[0].title: must be 1 to",
        "checklists[0].items[1].id: `a` is used twice",
        "checklists[1].items: a checklist has 1 to 45 items (found 0)",
        "checklists[2]",
    ] {
        assert!(p.contains(want), "missing {want:?} in:\n{p}");
    }
}
