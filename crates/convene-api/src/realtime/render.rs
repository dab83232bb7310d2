//! Rendering events for the live streams: each committed event's wire JSON (an [`EventView`])
//! once for all its subscribers, and the form a guest let in with many others sees as its own
//! (`participant.admitted`, [`Event::view_for`]) once, cut at the receiver's identity.

use axum::extract::ws::Utf8Bytes;
use convene_core::event::{Event, EventKind, ViewerClass};
use convene_core::ids::Identity;

use crate::wire::EventView;

/// One committed event, with its wire JSON (an [`EventView`]) rendered once for all subscribers.
#[derive(Debug)]
pub struct Published {
    pub event: Event,
    /// The event's `type`, e.g. `participant.admitted`.
    pub kind: Box<str>,
    /// The [`EventView`] JSON; shared bytes, so each WebSocket send is a reference-count bump.
    pub json: Utf8Bytes,
    /// For an event its receivers see in their own form ([`Event::view_for`], a bulk
    /// admission): that form's JSON around the receiver's identity, rendered once here.
    own: Option<OwnView>,
}

/// An own form's JSON: `before`, the receiver's identity as a JSON string, `after`.
#[derive(Debug)]
struct OwnView {
    kind: Box<str>,
    before: String,
    after: String,
}

impl Published {
    pub fn new(event: &Event) -> Self {
        let view = EventView::from(event);
        let json = serde_json::to_string(&view).unwrap_or_default();
        Self {
            event: event.clone(),
            kind: view.kind.into_boxed_str(),
            json: json.into(),
            own: OwnView::of(event),
        }
    }

    /// The event's JSON in the form `identity` sees it, when it has its own form (see
    /// [`Event::has_own_view`]).
    pub fn own_view(&self, identity: &Identity) -> Option<Utf8Bytes> {
        let own = self.own.as_ref()?;
        let name = serde_json::to_string(identity.as_str()).ok()?;
        let mut json = String::with_capacity(own.before.len() + name.len() + own.after.len());
        json.push_str(&own.before);
        json.push_str(&name);
        json.push_str(&own.after);
        Some(json.into())
    }

    /// [`Published::own_view`]'s JSON before and after the receiver's identity.
    pub fn own_parts(&self) -> Option<(&str, &str)> {
        self.own
            .as_ref()
            .map(|own| (own.before.as_str(), own.after.as_str()))
    }

    /// The `type` of [`Published::own_view`]'s form (the event's own when it has none).
    pub fn own_kind(&self) -> &str {
        self.own.as_ref().map_or(&self.kind, |own| &own.kind)
    }
}

impl OwnView {
    /// Renders the own form for one receiver and cuts it at that receiver's identity; `None`
    /// when the event has no own form or the identity's JSON appears more than once.
    fn of(event: &Event) -> Option<Self> {
        let EventKind::ParticipantsAdmitted { identities, .. } = &event.kind else {
            return None;
        };
        let sample = identities.first()?;
        let own = event.seen_by(ViewerClass::Waiting, Some(sample))?;
        let view = EventView::from(&own);
        let json = serde_json::to_string(&view).ok()?;
        let name = serde_json::to_string(sample.as_str()).ok()?;
        let (before, after) = json.split_once(&name)?;
        if after.contains(&name) {
            return None;
        }
        Some(Self {
            kind: view.kind.into_boxed_str(),
            before: before.to_owned(),
            after: after.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::realtime::fixtures::{admitted, event, id};
    use convene_core::event::Audience;
    use convene_core::ids::InstanceId;
    use convene_core::meeting::MeetingStatus;

    #[test]
    fn the_own_form_rendered_once_is_what_each_guest_would_render_alone() {
        let r = InstanceId::generate(&mut rand::rng());
        let guests = [r#"say "hi""#, r"back\slash", "zoë", "plain", "Émile €"].map(id);
        let mut identities = guests.to_vec();
        identities.sort();
        let bulk = event(
            7,
            &r,
            Audience::Admitted,
            EventKind::ParticipantsAdmitted {
                identities,
                room_name: "the room".into(),
                status: MeetingStatus::Live,
            },
        );
        let published = Published::new(&bulk);
        for guest in &guests {
            let alone = Published::new(
                &bulk
                    .seen_by(ViewerClass::Waiting, Some(guest))
                    .expect("an own form"),
            );
            let json = published.own_view(guest).expect("rendered once");
            assert_eq!(published.own_kind(), &*alone.kind);
            assert_eq!(json.as_str(), alone.json.as_str(), "for {guest:?}");
        }
        // An event without an own form has none to render.
        assert!(
            Published::new(&admitted(8, &r, "plain"))
                .own_view(&id("plain"))
                .is_none()
        );
        // Where the identity's JSON also appears elsewhere, the form is not cut (each stream
        // renders its own instead).
        let ambiguous = event(
            9,
            &r,
            Audience::Admitted,
            EventKind::ParticipantsAdmitted {
                identities: vec![id("room")],
                room_name: "room".into(),
                status: MeetingStatus::Live,
            },
        );
        assert!(Published::new(&ambiguous).own_view(&id("room")).is_none());
    }
}
