//! The Prometheus endpoint (`sip-ka run --metrics ADDR`).
//!
//! * [`families`]: the `sipka_` families, their types and help;
//! * [`mapping`]: which series each STATS and edge counter is;
//! * [`collect`]: reading the maps, the responder and the edge at scrape
//!   time;
//! * [`encode`]: the text exposition format (prometheus-client);
//! * [`server`]: the HTTP listener (hyper) on the daemon's runtime.

pub mod collect;
pub mod encode;
pub mod families;
pub mod mapping;
pub mod server;

pub use collect::{BuildInfo, FastPath, PinnedMaps, Sources};
pub use server::start;

/// `sipka_build_info`'s `xdp_mode` from what the attach step reported.
pub fn xdp_mode_label(attached: Option<&str>) -> &'static str {
    match attached {
        None => "off",
        Some(how) if how.contains("native") => "native",
        Some(how) if how.contains("skb") => "skb",
        // The program replaced the one behind a pinned link, whose mode
        // an earlier start chose.
        Some(_) => "inherited",
    }
}

#[cfg(test)]
mod tests;
