//! One dialog as the edge keeps it: its phase, how its UA is reached,
//! what a reaping BYE needs, and the forks that answered 2xx.

use sip_ka_common::maps::{
    DialogValue, SessionRefresher, DIALOG_CONFIRMED, DIALOG_EARLY, DIALOG_TERMINATING,
};

use super::packed::{Cold, Packed};
use crate::{
    edge::{persist, session_timer::Session, transport::Flow},
    sip::{
        headers::{header_parts, name_matches},
        CSeq, Refresher, SipMessage,
    },
};

/// Where a dialog is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// INVITE sent, no To tag seen yet (not in the map).
    Pending,
    /// A 1xx with a To tag.
    Early,
    /// A 2xx.
    Confirmed,
    /// BYE seen, waiting for its response.
    Terminating,
}

impl Phase {
    pub(super) fn map_state(self) -> Option<u32> {
        match self {
            Phase::Pending => None,
            Phase::Early => Some(DIALOG_EARLY),
            Phase::Confirmed => Some(DIALOG_CONFIRMED),
            Phase::Terminating => Some(DIALOG_TERMINATING),
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Early => "early",
            Phase::Confirmed => "confirmed",
            Phase::Terminating => "terminating",
        }
    }

    pub(super) fn from_name(s: &str) -> Option<Phase> {
        Some(match s {
            "pending" => Phase::Pending,
            "early" => Phase::Early,
            "confirmed" => Phase::Confirmed,
            "terminating" => Phase::Terminating,
            _ => return None,
        })
    }
}

/// One dialog: what every in-dialog request reads or writes inline, the
/// rest packed in one heap block ([`Packed`]).
pub(super) struct Dialog {
    /// Last in-dialog traffic the edge saw itself (unix ms): requests it
    /// forwarded, keep-alives it answered (`--dialog-idle-timeout`).
    pub(super) last_activity_ms: u64,
    /// Highest CSeq number seen in the dialog.
    pub(super) cseq: u32,
    pub(super) phase: Phase,
    /// Whether the UA sent the dialog-creating INVITE.
    pub(super) caller_is_ua: bool,
    /// Creation time, phase start, how the UA is reached (where requests
    /// from the PBX go), From of the INVITE (caller side, with its tag),
    /// To of the 2xx (callee side, with its tag), the Contact URIs of both
    /// sides (where a BYE goes), and the To tags of the forks that
    /// answered the INVITE with a 2xx: each is a dialog (RFC 3261
    /// 13.2.2.4) sharing the Call-ID, so the BYE ending one fork's dialog
    /// must not end the one the caller kept.
    pub(super) cold: Packed,
}

/// The first value of the header whose canonical name is `canonical`:
/// what [`SipMessage::header`] gives, without looking the name up in the
/// table of names and copying it (a refresh reads Call-ID and CSeq of
/// four messages several times each).
pub(super) fn field<'m>(msg: &'m SipMessage, canonical: &str) -> Option<&'m str> {
    msg.headers()
        .iter()
        .map(header_parts)
        .find(|(n, _)| name_matches(n, canonical))
        .map(|(_, v)| v)
}

/// [`SipMessage::call_id`], through [`field`].
pub(super) fn call_id(msg: &SipMessage) -> Option<&str> {
    field(msg, "Call-ID")
}

/// [`SipMessage::cseq`], through [`field`].
pub(super) fn cseq(msg: &SipMessage) -> Option<CSeq> {
    field(msg, "CSeq").and_then(|v| CSeq::parse(v).ok())
}

/// Most forks remembered per Call-ID.
const MAX_FORKS: usize = 16;

/// The tag parameter of a From or To value.
pub(super) fn tag_of(value: &str) -> Option<String> {
    crate::sip::NameAddr::parse(value)
        .ok()?
        .param("tag")
        .flatten()
        .map(str::to_string)
}

impl Dialog {
    pub(super) fn new(
        phase: Phase,
        cseq: u32,
        caller_is_ua: bool,
        last_ms: u64,
        cold: &Cold,
    ) -> Self {
        Dialog {
            last_activity_ms: last_ms,
            cseq,
            phase,
            caller_is_ua,
            cold: Packed::pack(cold),
        }
    }

    pub(super) fn ua(&self) -> Flow {
        self.cold.ua()
    }

    pub(super) fn set_ua(&mut self, ua: Flow) {
        let mut c = self.cold.unpack();
        c.ua = ua;
        self.cold = Packed::pack(&c);
    }

    /// The callee-side tag of an in-dialog request or its response: the
    /// To tag when the caller's From tag is the From tag, else the From tag
    /// (a request from the callee side).
    pub(super) fn callee_tag(&self, msg: &SipMessage) -> Option<String> {
        let caller = tag_of(self.cold.caller_from());
        let from = msg.from_tag();
        if from.is_some() && from == caller {
            msg.to_tag()
        } else {
            from
        }
    }

    /// A 2xx to an INVITE. To a request of the caller's side (its From
    /// tag is the caller's): a fork's answer, or a callee target refresh;
    /// the fork is added or its Contact updated, and the first fork is the
    /// one reaping BYEs address. To a request of the callee's side (a
    /// re-INVITE from the PBX's side): its Contact is the caller's. Returns
    /// whether anything changed.
    pub(super) fn note_invite_2xx(
        &mut self,
        msg: &SipMessage,
        to: Option<String>,
        contact: Option<String>,
    ) -> bool {
        let mut c = self.cold.unpack();
        let changed = note_2xx(&mut c, msg, to, contact);
        if changed {
            self.cold = Packed::pack(&c);
        }
        changed
    }

    /// A fork's dialog ended: if reaping BYEs addressed it, they now
    /// address the first fork left.
    pub(super) fn drop_fork(&mut self, tag: &str) {
        let mut c = self.cold.unpack();
        c.forks.retain(|f| f.tag != tag);
        if c.callee_to.as_deref().and_then(tag_of).as_deref() == Some(tag) {
            let next = c.forks.first();
            c.callee_to = next.map(|f| f.to.clone());
            c.callee_contact = next.and_then(|f| f.contact.clone());
        }
        self.cold = Packed::pack(&c);
    }

    /// Whether the request `msg`, arriving by `flow`, may make `flow` the
    /// way to this dialog's UA. A Call-ID travels in every message and is
    /// no secret, so it takes more: the address the UA used so far, and the
    /// dialog's tags (the caller's and a callee's, in either direction;
    /// until a callee's tag is known, the caller's alone).
    pub(super) fn may_move_to(&self, msg: &SipMessage, flow: &Flow) -> bool {
        if flow.peer().ip() != self.ua().peer().ip() {
            return false;
        }
        let Some(caller) = tag_of(self.cold.caller_from()) else {
            return false;
        };
        let callees: Vec<String> = self
            .cold
            .callee_to()
            .and_then(tag_of)
            .into_iter()
            .chain(self.cold.fork_tags().map(str::to_string))
            .collect();
        let is_caller = |t: &Option<String>| t.as_deref() == Some(caller.as_str());
        let is_callee = |t: &Option<String>| {
            callees.is_empty() || t.as_ref().is_some_and(|t| callees.contains(t))
        };
        let (from, to) = (msg.from_tag(), msg.to_tag());
        (is_caller(&from) && is_callee(&to)) || (is_caller(&to) && is_callee(&from))
    }

    /// Whether ending the dialog `msg` belongs to leaves other confirmed
    /// forks of this Call-ID alive.
    pub(super) fn other_forks_live(&self, msg: &SipMessage) -> bool {
        if self.cold.fork_count() <= 1 {
            return false;
        }
        let tag = self.callee_tag(msg);
        tag.is_some_and(|t| self.cold.fork_tags().any(|f| f == t))
    }
}

/// [`Dialog::note_invite_2xx`] on the unpacked form.
fn note_2xx(c: &mut Cold, msg: &SipMessage, to: Option<String>, contact: Option<String>) -> bool {
    let caller_tag = tag_of(&c.caller_from);
    let from_caller = msg.from_tag().is_some() && msg.from_tag() == caller_tag;
    if !from_caller {
        let changed = contact.is_some() && contact != c.caller_contact;
        if changed {
            c.caller_contact = contact;
        }
        return changed;
    }
    let (Some(tag), Some(to)) = (msg.to_tag(), to) else {
        return false;
    };
    let mut changed = false;
    let room = c.forks.len() < MAX_FORKS;
    match c.forks.iter_mut().find(|f| f.tag == tag) {
        Some(f) if contact.is_some() && contact != f.contact => {
            f.contact = contact.clone();
            changed = true;
        }
        Some(_) => {}
        None if room => {
            c.forks.push(persist::Fork {
                tag: tag.clone(),
                to: to.clone(),
                contact: contact.clone(),
            });
            changed = true;
        }
        None => {}
    }
    if c.callee_to.is_none() {
        c.callee_to = Some(to);
        c.callee_contact = contact;
        changed = true;
    } else if c.callee_to.as_deref().and_then(tag_of) == Some(tag) && changed {
        c.callee_contact = contact;
    }
    changed
}

/// The DIALOGS map's `flags` word for a session.
pub(super) fn session_flags(s: &Session) -> u32 {
    let refresher = s.refresher.map(|r| match r {
        Refresher::Uac => SessionRefresher::Uac,
        Refresher::Uas => SessionRefresher::Uas,
    });
    DialogValue::session_flags(s.interval, refresher)
}

/// Another edge's dialog (shared state): its owner and latest record.
#[derive(Clone, Debug)]
pub struct Replica {
    pub owner: String,
    pub rec: crate::edge::persist::DialogRecord,
}
