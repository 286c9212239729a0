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
}
