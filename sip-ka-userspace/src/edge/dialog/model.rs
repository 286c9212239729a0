//! One dialog as the edge keeps it: its phase, how its UA is reached,
//! what a reaping BYE needs, and the forks that answered 2xx.

use sip_ka_common::maps::{
    DialogValue, SessionRefresher, DIALOG_CONFIRMED, DIALOG_EARLY, DIALOG_TERMINATING,
};

use crate::{
    edge::{persist, session_timer::Session, transport::Flow},
    sip::{Refresher, SipMessage},
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

pub(super) struct Dialog {
    pub(super) phase: Phase,
    pub(super) hash: u64,
    /// How the UA is reached (where requests from the PBX go).
    pub(super) ua: Flow,
    pub(super) created_unix: u64,
    /// When the phase began (the edge's ms clock).
    pub(super) since_ms: u64,
    /// Whether the UA sent the dialog-creating INVITE.
    pub(super) caller_is_ua: bool,
    /// From of the INVITE (caller side, with its tag).
    pub(super) caller_from: String,
    /// To of the 2xx (callee side, with its tag).
    pub(super) callee_to: Option<String>,
    /// Contact URIs of both sides (where a BYE goes).
    pub(super) caller_contact: Option<String>,
    pub(super) callee_contact: Option<String>,
    /// Highest CSeq number seen in the dialog.
    pub(super) cseq: u32,
    /// Last in-dialog traffic the edge saw itself (unix ms): requests it
    /// forwarded, keep-alives it answered (`--dialog-idle-timeout`).
    pub(super) last_activity_ms: u64,
    /// To tags of the forks that answered the INVITE with a 2xx: each is a
    /// dialog (RFC 3261 13.2.2.4) sharing the Call-ID, so the BYE ending
    /// one fork's dialog must not end the one the caller kept.
    pub(super) forks: Vec<persist::Fork>,
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
    /// The callee-side tag of an in-dialog request or its response: the
    /// To tag when the caller's From tag is the From tag, else the From tag
    /// (a request from the callee side).
    pub(super) fn callee_tag(&self, msg: &SipMessage) -> Option<String> {
        let caller = tag_of(&self.caller_from);
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
        let caller_tag = tag_of(&self.caller_from);
        let from_caller = msg.from_tag().is_some() && msg.from_tag() == caller_tag;
        if !from_caller {
            let changed = contact.is_some() && contact != self.caller_contact;
            if changed {
                self.caller_contact = contact;
            }
            return changed;
        }
        let (Some(tag), Some(to)) = (msg.to_tag(), to) else {
            return false;
        };
        let mut changed = false;
        let room = self.forks.len() < MAX_FORKS;
        match self.forks.iter_mut().find(|f| f.tag == tag) {
            Some(f) if contact.is_some() && contact != f.contact => {
                f.contact = contact.clone();
                changed = true;
            }
            Some(_) => {}
            None if room => {
                self.forks.push(persist::Fork {
                    tag: tag.clone(),
                    to: to.clone(),
                    contact: contact.clone(),
                });
                changed = true;
            }
            None => {}
        }
        if self.callee_to.is_none() {
            self.callee_to = Some(to);
            self.callee_contact = contact;
            changed = true;
        } else if self.callee_to.as_deref().and_then(tag_of) == Some(tag) && changed {
            self.callee_contact = contact;
        }
        changed
    }

    /// A fork's dialog ended: if reaping BYEs addressed it, they now
    /// address the first fork left.
    pub(super) fn drop_fork(&mut self, tag: &str) {
        self.forks.retain(|f| f.tag != tag);
        if self.callee_to.as_deref().and_then(tag_of).as_deref() == Some(tag) {
            let next = self.forks.first();
            self.callee_to = next.map(|f| f.to.clone());
            self.callee_contact = next.and_then(|f| f.contact.clone());
        }
    }

    /// Whether the request `msg`, arriving by `flow`, may make `flow` the
    /// way to this dialog's UA. A Call-ID travels in every message and is
    /// no secret, so it takes more: the address the UA used so far, and the
    /// dialog's tags (the caller's and a callee's, in either direction;
    /// until a callee's tag is known, the caller's alone).
    pub(super) fn may_move_to(&self, msg: &SipMessage, flow: &Flow) -> bool {
        if flow.peer().ip() != self.ua.peer().ip() {
            return false;
        }
        let Some(caller) = tag_of(&self.caller_from) else {
            return false;
        };
        let callees: Vec<String> = self
            .callee_to
            .iter()
            .filter_map(|t| tag_of(t))
            .chain(self.forks.iter().map(|f| f.tag.clone()))
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
        let tag = self.callee_tag(msg);
        self.forks.len() > 1 && tag.is_some_and(|t| self.forks.iter().any(|f| f.tag == t))
    }
}

/// The DIALOGS map's `flags` word for a session.
pub(super) fn session_flags(s: &Session) -> u32 {
    let refresher = s.refresher.map(|r| match r {
        Refresher::Uac => SessionRefresher::Uac,
        Refresher::Uas => SessionRefresher::Uas,
    });
    DialogValue::session_flags(s.interval, refresher)
}
