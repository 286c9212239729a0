//! Who gets a connection slot: a fair share of `--max-connections` among
//! sources, rather than a small fixed number per address that cuts off a
//! large NAT.

use std::net::IpAddr;

/// Whether two addresses are one source for the per-source connection
/// limit: the same IPv4 address, or the same IPv6 /64 (one subscriber's
/// prefix: counting single IPv6 addresses would let one host take every
/// connection).
pub fn same_source(a: IpAddr, b: IpAddr) -> bool {
    match (a, b) {
        (IpAddr::V6(a), IpAddr::V6(b)) => a.segments()[..4] == b.segments()[..4],
        (a, b) => a == b,
    }
}

/// Open connections past which the largest holders are refused new ones.
pub fn near_limit(max_conns: usize) -> usize {
    max_conns - max_conns / 10
}

/// What becomes of a new connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Accept,
    /// Over `--max-connections-per-ip`, or the edge is near its limit and
    /// the source already holds the most (its fair share and more).
    Refuse,
    /// The edge is full: the connection (this id) of the source holding
    /// the most is closed to let a smaller one in.
    Evict(u64),
}

/// Fair share of `max_conns` among sources (an IPv4 address, an IPv6
/// /64; [`same_source`]): far from the limit anyone may open as many as
/// they like (a large NAT's phones each hold one); near it (the last
/// tenth, [`near_limit`]) the sources holding the most are refused, which
/// keeps that tenth for the others; at it, a source holding fewer than
/// the largest one takes the largest one's oldest connection, so that no
/// source can keep another out. `per_ip_cap` (0 = none) is the operator's hard cap.
/// `open` lists (id, peer address) of every connection when the decision
/// needs them; `total` is their count.
pub fn admit(
    open: &[(u64, IpAddr)],
    total: usize,
    ip: IpAddr,
    max_conns: usize,
    per_ip_cap: usize,
) -> Admission {
    let from = || open.iter().filter(|(_, p)| same_source(*p, ip)).count();
    if per_ip_cap > 0 && from() >= per_ip_cap {
        return Admission::Refuse;
    }
    if total < near_limit(max_conns) {
        return Admission::Accept;
    }
    // Per source: how many, and its oldest connection.
    let mut by_source: Vec<(IpAddr, usize, u64)> = Vec::new();
    for (id, p) in open {
        match by_source.iter_mut().find(|(s, _, _)| same_source(*s, *p)) {
            Some(e) => {
                e.1 += 1;
                e.2 = e.2.min(*id);
            }
            None => by_source.push((*p, 1, *id)),
        }
    }
    let mine = from();
    let Some(&(_, top, oldest)) = by_source
        .iter()
        .max_by_key(|(_, n, id)| (*n, u64::MAX - id))
    else {
        return Admission::Accept;
    };
    if total < max_conns {
        return if mine >= top {
            Admission::Refuse
        } else {
            Admission::Accept
        };
    }
    if mine + 1 < top {
        Admission::Evict(oldest)
    } else {
        Admission::Refuse
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_shared_fairly_near_the_limit() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let nat = ip("203.0.113.1");
        let other = ip("198.51.100.7");
        // Far from the limit a NAT takes as many as it has phones.
        let open: Vec<(u64, IpAddr)> = (0..800).map(|i| (i, nat)).collect();
        assert_eq!(admit(&open, 800, nat, 1000, 0), Admission::Accept);
        // The operator's hard cap still holds when set.
        assert_eq!(admit(&open, 800, nat, 1000, 64), Admission::Refuse);
        // Near the limit the largest holder is refused, another is not.
        let open: Vec<(u64, IpAddr)> = (0..950).map(|i| (i, nat)).collect();
        assert_eq!(admit(&open, 950, nat, 1000, 0), Admission::Refuse);
        assert_eq!(admit(&open, 950, other, 1000, 0), Admission::Accept);
        // Full: the newcomer takes the largest holder's oldest slot.
        let mut open: Vec<(u64, IpAddr)> = (10..1000).map(|i| (i, nat)).collect();
        open.extend((1000..1010).map(|i| (i, other)));
        assert_eq!(admit(&open, 1000, other, 1000, 0), Admission::Evict(10));
        assert_eq!(admit(&open, 1000, nat, 1000, 0), Admission::Refuse);
        // A /64 is one source.
        let v6: Vec<(u64, IpAddr)> = (0..1000)
            .map(|i| (i, IpAddr::from([0x2001, 0xdb8, 1, 2, 0, 0, 0, i as u16])))
            .collect();
        assert_eq!(
            admit(&v6, 1000, ip("2001:db8:1:2::ffff"), 1000, 0),
            Admission::Refuse
        );
        assert_eq!(
            admit(&v6, 1000, ip("2001:db8:1:3::1"), 1000, 0),
            Admission::Evict(0)
        );
    }
}
