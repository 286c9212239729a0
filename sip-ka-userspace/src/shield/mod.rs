//! The shield: evidence against sources, the bans it leads to, and the
//! BANS map the XDP program drops banned sources' packets by.
//!
//! * [`prefix`]: the unit of a ban (an address, an IPv6 /64, a list's CIDR).
//! * [`evidence`]: what each source did and when that is a ban (sans-IO).
//! * [`table`]: the bans in force, for the daemon's own paths.
//! * [`writer`]: the task that keeps the BANS map (and the shared store)
//!   in step with the table, lifts expired bans and reads the blocklists.
//! * [`blocklist`]: the `--blocklist` file format.
//!
//! The edge feeds evidence in ([`Shield::observe`]); everything else only
//! asks [`Shield::is_banned`]. The shield decides; the writer does the IO.

pub mod blocklist;
pub mod evidence;
pub mod prefix;
pub mod state;
pub mod table;
pub mod writer;

pub use evidence::{Evidence, Policy};
pub use prefix::Prefix;
pub use state::{always_spared, Change, Settings, Shield, Stats};
pub use table::{Ban, BanTable, FOREVER};
