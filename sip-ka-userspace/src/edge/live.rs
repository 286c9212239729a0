//! Changing the edge's tunables while it runs (`sip-ka config set`,
//! SIGHUP): each value goes where it is read, under that place's own lock,
//! one lock at a time.

use std::time::Duration;

use super::{config::Tunables, state::Edge, EdgeConfig};
use crate::util::lock::read;

impl Edge {
    /// The live values, copied out (the read lock is held for the copy
    /// only).
    pub fn tun(&self) -> Tunables {
        *read(&self.live)
    }

    /// Applies `cfg`'s live values (the others are the start's and are
    /// ignored here); `idle` is `Some` when `--dialog-idle-timeout`
    /// changed. `cfg` has been checked.
    pub fn retune(&self, cfg: &EdgeConfig, idle: Option<Option<Duration>>, now_ms: u64) {
        match self.live.write() {
            Ok(mut l) => *l = cfg.tunables(),
            Err(p) => *p.into_inner() = cfg.tunables(),
        }
        {
            let mut d = self.dialogs();
            d.set_session_config(cfg.timers, cfg.reap_expired);
            d.set_pending_limits(cfg.state.pending_dialogs, cfg.state.pending_dialog_bytes);
            if let Some(idle) = idle {
                d.set_idle_timeout(idle, now_ms);
            }
        }
        self.bindings.set_limits(
            cfg.state.pending_registers,
            cfg.state.pending_register_bytes,
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::edge::{config::test_config, dialog::NoSink, OptionsPolicy};

    #[test]
    fn a_retune_changes_what_the_next_message_sees() {
        let cfg = test_config(
            "198.18.0.1:5060".parse().unwrap(),
            "198.18.0.2:5060".parse().unwrap(),
        );
        let e = Edge::new(cfg.clone(), Box::new(NoSink), None, 0);
        assert_eq!(e.tun().options_pbx, OptionsPolicy::Answer);
        let mut next = cfg;
        next.options_pbx = OptionsPolicy::Forward;
        next.limits.max_message_size = 600;
        next.qualify_frequency = Duration::from_secs(7);
        e.retune(&next, None, 0);
        let t = e.tun();
        assert_eq!(t.options_pbx, OptionsPolicy::Forward);
        assert_eq!(t.limits.max_message_size, 600);
        assert_eq!(t.retry_after(), 7);
    }

    fn invite(call_id: &str, session_expires: u32) -> Vec<u8> {
        format!(
            "INVITE sip:service@198.18.0.1:5060 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 198.18.0.3:5062;branch=z9hG4bK{branch};rport\r\n\
             From: <sip:ua@198.18.0.3>;tag=u1\r\n\
             To: <sip:service@198.18.0.1>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 INVITE\r\n\
             Max-Forwards: 70\r\n\
             Supported: timer\r\n\
             Session-Expires: {session_expires}\r\n\
             Contact: <sip:ua@198.18.0.3:5062>\r\n\
             Content-Length: 0\r\n\r\n",
            branch = call_id.replace('@', "-"),
        )
        .into_bytes()
    }

    #[test]
    fn a_raised_min_se_refuses_the_next_invite_below_it() {
        let (local, pbx) = (
            "198.18.0.1:5060".parse().unwrap(),
            "198.18.0.2:5060".parse().unwrap(),
        );
        let ua = "198.18.0.3:5062".parse().unwrap();
        let cfg = test_config(local, pbx);
        let e = Edge::new(cfg.clone(), Box::new(NoSink), None, 0);
        let status = |out: &[u8]| {
            String::from_utf8_lossy(out)
                .lines()
                .next()
                .unwrap()
                .to_string()
        };
        let (out, _) = e.handle(&invite("a@x", 100), ua, local, 0).unwrap();
        assert!(
            status(&out).starts_with("INVITE "),
            "forwarded: {}",
            status(&out)
        );
        let mut next = cfg;
        next.timers = crate::edge::session_timer::TimerConfig::new(120, 1800, false).unwrap();
        e.retune(&next, None, 0);
        let (out, _) = e.handle(&invite("b@x", 100), ua, local, 0).unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("SIP/2.0 422 "), "{text}");
        assert!(text.contains("Min-SE: 120"), "{text}");
    }

    #[test]
    fn lowered_pending_caps_hold_for_the_next_invites() {
        let (local, pbx) = (
            "198.18.0.1:5060".parse().unwrap(),
            "198.18.0.2:5060".parse().unwrap(),
        );
        let ua = "198.18.0.3:5062".parse().unwrap();
        let cfg = test_config(local, pbx);
        let e = Edge::new(cfg.clone(), Box::new(NoSink), None, 0);
        for i in 0..10 {
            e.handle(&invite(&format!("c{i}@x"), 1800), ua, local, 0);
        }
        assert_eq!(e.dialogs().pending_evicted(), 0);
        let mut next = cfg;
        next.state.pending_dialogs = 4;
        e.retune(&next, None, 0);
        e.handle(&invite("d@x", 1800), ua, local, 0);
        assert_eq!(e.dialogs().pending_evicted(), 7, "10 + 1 pending, cap 4");
    }
}
