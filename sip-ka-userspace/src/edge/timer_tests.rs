//! RFC 4028 at the edge level on a virtual clock (filled in below).
