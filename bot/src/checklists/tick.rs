//! A click on a checklist item button (`tick:<instance>:<item>`), from any platform. It is
//! never trusted by its value alone: the clicker must be in `[[people]]`, and the message
//! clicked must be one drbot posted for the instance the button names.

use serde_json::json;

use crate::{
    actor::Actor,
    app::App,
    dispatch::internal,
    reply::{Reply, UserError},
    store::{audit, checklists::Toggle},
};

/// A parsed button value `tick:<instance>:<item>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickClick {
    /// The instance the button names.
    pub instance: i64,
    /// The item the button names.
    pub item: String,
}

impl TickClick {
    /// Reads a button value; `None` when it is not a well-formed tick.
    pub fn parse(value: &str) -> Option<TickClick> {
        let rest = value.strip_prefix("tick:")?;
        let (instance, item) = rest.split_once(':')?;
        let instance = instance.parse().ok().filter(|i: &i64| *i > 0)?;
        if item.is_empty() || item.len() > super::MAX_ITEM_ID || item.contains(':') {
            return None;
        }
        Some(TickClick {
            instance,
            item: item.to_string(),
        })
    }

    /// The button value naming `item` of `instance`.
    pub fn value(instance: i64, item: &str) -> String {
        format!("tick:{instance}:{item}")
    }
}

/// Handles a tick click on message `message` in `channel` on `platform`: toggles the item
/// (auditing `checklist.tick` with who and when) or refuses (auditing the refusal).
pub async fn click(
    app: &App,
    actor: &Actor,
    platform: &str,
    channel: &str,
    message: &str,
    c: &TickClick,
) -> Reply {
    let reply = match decide(app, actor, platform, channel, message, c).await {
        Ok(r) => r,
        Err(e) => internal(e, "ticking a checklist item"),
    };
    if let Reply::Ticked { view, .. } = &reply
        && view.instance.run.is_some()
    {
        // A run's checklist is shown on every platform: bring the others up to date.
        let (app, id, platform) = (app.clone(), view.instance.id, platform.to_string());
        tokio::spawn(async move { super::runs::refresh(&app, id, Some(&platform)).await });
    }
    if let Reply::Refused(e) = &reply {
        let entry = audit::Entry {
            actor: actor.clone(),
            action: "checklist.tick_refused".into(),
            run_id: None,
            detail: json!({
                "instance": c.instance, "item": c.item, "message": message,
                "refusal": serde_json::to_value(e).unwrap_or_default(),
            }),
        };
        if let Err(e) = app.audit.append(entry).await {
            tracing::error!(error = format!("{e:#}"), "auditing a refused tick failed");
        }
    }
    reply
}

/// `/dr checklist tick|untick <#id> <item>`: what the item's button does, for when chat is
/// down (`drbot cmd`) or the message is gone. Only people in `[[people]]` may; the item is
/// set (not toggled: typing it twice changes nothing), audited, and every posted copy of the
/// checklist is brought up to date.
pub async fn typed(
    app: &App,
    actor: &Actor,
    instance: i64,
    item: &str,
    want: bool,
) -> anyhow::Result<Reply> {
    if actor.person.is_none() {
        return Ok(Reply::Refused(UserError::UnknownAccount));
    }
    let toggle = app
        .store
        .set_tick(instance, item, actor, Some(want))
        .await?;
    if toggle == Toggle::UnknownInstance {
        return Ok(Reply::Refused(UserError::UnknownChecklist { instance }));
    }
    let reply = answer(app, instance, item, toggle).await?;
    if matches!(reply, Reply::Ticked { .. }) {
        let app2 = app.clone();
        tokio::spawn(async move { super::runs::refresh(&app2, instance, None).await });
    }
    Ok(reply)
}

/// The answer to a tick the store has taken: the checklist as it is now, or a refusal
/// naming the item.
async fn answer(app: &App, instance: i64, item: &str, toggle: Toggle) -> anyhow::Result<Reply> {
    let ticked = match toggle {
        Toggle::Ticked | Toggle::Already(true) => true,
        Toggle::Unticked | Toggle::Already(false) => false,
        Toggle::UnknownInstance | Toggle::UnknownItem => {
            return Ok(Reply::Refused(UserError::UnknownChecklistItem {
                item: item.to_string(),
            }));
        }
    };
    let view = app
        .store
        .checklist(instance)
        .await?
        .ok_or_else(|| anyhow::anyhow!("checklist {instance} vanished"))?;
    Ok(Reply::Ticked {
        view,
        item: item.to_string(),
        ticked,
    })
}

/// Whether `message` is drbot's Slack post of instance `instance` in `channel` whose record
/// is still being written: the post's claim in `outbound` (`checklist:<id>:<channel>`) names
/// it, or, while that post is still in flight, names it within 2 s. A click that comes that
/// soon after the message appeared is not refused as foreign.
async fn just_posted(
    app: &App,
    instance: i64,
    channel: &str,
    message: &str,
) -> anyhow::Result<bool> {
    let key = format!("checklist:{instance}:{channel}");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match app.store.outbound_message(&key).await? {
            None => return Ok(false),
            Some(Some(posted)) => return Ok(posted == message),
            Some(None) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Some(None) => return Ok(false),
        }
    }
}

async fn decide(
    app: &App,
    actor: &Actor,
    platform: &str,
    channel: &str,
    message: &str,
    c: &TickClick,
) -> anyhow::Result<Reply> {
    if actor.person.is_none() {
        return Ok(Reply::Refused(UserError::UnknownAccount));
    }
    match app
        .store
        .checklist_message(platform, channel, message)
        .await?
    {
        Some(m) if m.instance == c.instance => {}
        None if platform == "slack" && just_posted(app, c.instance, channel, message).await? => {}
        _ => return Ok(Reply::Refused(UserError::ForeignButton)),
    }
    let toggle = app.store.toggle_tick(c.instance, &c.item, actor).await?;
    answer(app, c.instance, &c.item, toggle).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_well_formed_ticks() {
        assert_eq!(
            TickClick::parse("tick:12:stop-writes"),
            Some(TickClick {
                instance: 12,
                item: "stop-writes".into()
            })
        );
        assert_eq!(
            TickClick::parse(&TickClick::value(3, "a_b")).unwrap().item,
            "a_b"
        );
        for bad in [
            "tick:0:a",
            "tick:-1:a",
            "tick:x:a",
            "tick:1:",
            "tick:1",
            "tick:1:a:b",
            "approve:1:2",
            &format!("tick:1:{}", "a".repeat(49)),
        ] {
            assert_eq!(TickClick::parse(bad), None, "{bad}");
        }
    }
}
