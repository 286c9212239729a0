//! Dialog state kept by the edge (INVITE dialogs, keyed by Call-ID) and
//! mirrored into the DIALOGS map that the XDP program reads and bumps.
//!
//! * [`table`]: the table and its phases (INVITE, 1xx, 2xx, BYE, CANCEL,
//!   failures, forks);
//! * [`model`]: one dialog and its forks;
//! * `map`: the dialogs by Call-ID hash, each in one slot with its
//!   session timer entry and wheel node (the session timers' store);
//! * `packed`: a dialog's strings, flow and times in one heap block;
//! * [`expiry`]: session timers (RFC 4028) and the idle limit;
//! * [`journal`]: recording changes and restoring them after a restart;
//! * [`replica`]: dialogs other edges own (shared state);
//! * [`bye`]: the BYEs that reap an ended dialog;
//! * [`mirror`]: the DIALOGS map behind [`DialogSink`].

pub mod bye;
pub mod expiry;
pub mod journal;
mod map;
pub mod mirror;
pub mod model;
mod packed;
pub mod replica;
pub mod table;

#[cfg(test)]
mod tests;

pub use map::DialogMap;
pub use mirror::{BpfDialogs, DialogSink, NoSink};
pub use model::Phase;
pub use table::{Dialogs, Ended, BYE_LIMIT, EARLY_LIMIT};
