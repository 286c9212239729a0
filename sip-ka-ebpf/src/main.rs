//! sip-ka's XDP program: answers UDP CRLF pings and STUN Binding requests
//! on the SIP ports, counts SIP traffic, and bumps per-dialog keep-alive
//! counters. Everything it does not answer or drop is passed untouched.
#![no_std]
#![no_main]
// Atomic adds on map values shared by all CPUs (BPF_ATOMIC_ADD).
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod bans;
mod clock;
mod csum;
mod guard;
mod maps;
mod parse;
mod peers;
mod reply;
mod sip;
mod structs;
mod stun;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_ktime_get_ns, generated::bpf_xdp_load_bytes},
    macros::xdp,
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use sip_ka_common::{
    counters::sip_request_index,
    maps::{KIND_CRLF, KIND_SIP, KIND_STUN},
    sip::Method,
    stun::build_binding_success,
    Action, Config, Counter,
};

use crate::{
    maps::{atomic_add, config, is_sip_port, Counters, DIALOGS, SCRATCH},
    parse::{
        be16, parse_udp, ptr_at, EthHdr, Ipv4Hdr, Stop, Tcp, UdpHdr, ETH_HLEN, ETH_P_IP,
        IPPROTO_UDP, IPV4_MIN_HLEN,
    },
    reply::Payload,
    structs::{Scratch, Udp, BUF_LEN},
};

#[xdp]
pub fn sip_ka(ctx: XdpContext) -> u32 {
    let Some(st) = Counters::get() else {
        return xdp_action::XDP_PASS;
    };
    st.count(Counter::RxPackets);
    let p = match parse_udp(&ctx) {
        Ok(p) => p,
        Err(Stop::Tcp(t)) => return tcp_segment(&ctx, t, st),
        Err(stop) => {
            if let Some(c) = stop.counter() {
                st.count(c);
            }
            return xdp_action::XDP_PASS;
        }
    };
    if !is_sip_port(p.dport) {
        return xdp_action::XDP_PASS;
    }
    let Some(cfg) = config() else {
        return xdp_action::XDP_PASS;
    };
    st.count(Counter::SipPortDatagrams);
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        return xdp_action::XDP_PASS;
    };
    let s = unsafe { &mut *s };
    let p = p.converge(&mut s.pkt);
    if parse::copy_addrs(&ctx, &p, s).is_err() {
        st.count(Counter::PassMalformed);
        return xdp_action::XDP_PASS;
    }
    if let Some(drop) = bans::banned(s) {
        st.count_index(drop);
        return xdp_action::XDP_DROP;
    }
    if guard::acl_refuses(cfg, s) {
        st.count(Counter::DropAcl);
        return xdp_action::XDP_DROP;
    }
    on_sip_port(&ctx, cfg, &p, s, st)
}

/// A TCP segment to a SIP port (the edge's TCP and TLS listeners share
/// the UDP ports): dropped when its source is banned, so a banned
/// scanner's connections never open; passed untouched otherwise.
#[inline(always)]
fn tcp_segment(ctx: &XdpContext, t: Tcp, st: Counters) -> u32 {
    let Ok(ports) = ptr_at::<[u8; 4]>(ctx, t.l4_off) else {
        return xdp_action::XDP_PASS;
    };
    let dport = be16(unsafe { [(*ports)[2], (*ports)[3]] });
    if !is_sip_port(dport) {
        return xdp_action::XDP_PASS;
    }
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        return xdp_action::XDP_PASS;
    };
    let s = unsafe { &mut *s };
    if parse::copy_src(ctx, t.l3_off, t.is_v4, s).is_err() {
        return xdp_action::XDP_PASS;
    }
    match bans::banned(s) {
        Some(drop) => {
            st.count_index(drop);
            xdp_action::XDP_DROP
        }
        None => xdp_action::XDP_PASS,
    }
}

/// `\r\n\r\n` as the native checksum sum sees it.
const CRLF_PING_SUM: u64 = u32::from_ne_bytes(*b"\r\n\r\n") as u64;

#[inline(always)]
fn on_sip_port(ctx: &XdpContext, cfg: &Config, p: &Udp, s: &mut Scratch, st: Counters) -> u32 {
    let plen = p.payload_len;
    if plen == 0 {
        st.count(Counter::Other);
        return xdp_action::XDP_PASS;
    }
    // The two CRLF keep-alives are read where they lie: copying them into
    // the scratch area costs more than looking at them.
    if plen == 4 {
        if let Ok(b) = ptr_at::<[u8; 4]>(ctx, p.payload_off) {
            if unsafe { *b } == *b"\r\n\r\n" {
                return crlf_ping(ctx, cfg, p, s, st);
            }
        }
    } else if plen == 2 {
        if let Ok(b) = ptr_at::<[u8; 2]>(ctx, p.payload_off) {
            if unsafe { *b } == *b"\r\n" {
                st.count(Counter::CrlfLone);
                return match Action::from_u32(cfg.lone_crlf) {
                    Action::Pass => xdp_action::XDP_PASS,
                    _ => xdp_action::XDP_DROP,
                };
            }
        }
    }
    let n = if plen > BUF_LEN { BUF_LEN } else { plen };
    let n = n & (BUF_LEN * 2 - 1);
    if n == 0
        || unsafe {
            bpf_xdp_load_bytes(
                ctx.ctx,
                p.payload_off as u32,
                s.buf.as_mut_ptr() as *mut _,
                n as u32,
            )
        } != 0
    {
        st.count(Counter::PassMalformed);
        return xdp_action::XDP_PASS;
    }
    if s.buf[0] & 0xC0 == 0 {
        return stun_message(ctx, cfg, p, s, plen, st);
    }
    if cfg.sip_classify != 0 {
        s.len = n as u32;
        sip_message(ctx, cfg, p, s, plen, st);
    } else {
        st.count(Counter::Other);
    }
    xdp_action::XDP_PASS
}

#[inline(always)]
fn crlf_ping(ctx: &XdpContext, cfg: &Config, p: &Udp, s: &mut Scratch, st: Counters) -> u32 {
    st.count(Counter::CrlfPing);
    match Action::from_u32(cfg.udp_crlf) {
        Action::Drop => {
            st.count(Counter::CrlfDropped);
            return xdp_action::XDP_DROP;
        }
        Action::Pass => return xdp_action::XDP_PASS,
        Action::Answer => {}
    }
    answer(
        ctx,
        cfg,
        p,
        s,
        4,
        Some(CRLF_PING_SUM),
        Payload::Pong,
        KIND_CRLF,
        Counter::CrlfPongSent,
        st,
    )
}

#[inline(always)]
fn stun_message(
    ctx: &XdpContext,
    cfg: &Config,
    p: &Udp,
    s: &mut Scratch,
    plen: usize,
    st: Counters,
) -> u32 {
    let generation = match stun::classify(s, plen) {
        stun::Verdict::NotStun => {
            st.count(Counter::Other);
            return xdp_action::XDP_PASS;
        }
        stun::Verdict::Pass => {
            st.count(Counter::StunPassed);
            return xdp_action::XDP_PASS;
        }
        stun::Verdict::TooLong => {
            st.count(Counter::PassTooLong);
            st.count(Counter::StunPassed);
            return xdp_action::XDP_PASS;
        }
        stun::Verdict::BadFingerprint => {
            st.count(Counter::StunReq);
            st.count(Counter::StunBadFp);
            debug!(
                ctx,
                "STUN request with a wrong FINGERPRINT from port {}", p.sport
            );
            return xdp_action::XDP_DROP;
        }
        stun::Verdict::Answer(g) => g,
    };
    let action = match generation {
        sip_ka_common::stun::Generation::Classic => {
            st.count(Counter::StunClassic);
            // Classic requests are answered or passed, never dropped.
            match Action::from_u32(cfg.stun_classic) {
                Action::Answer => Action::from_u32(cfg.stun),
                _ => Action::Pass,
            }
        }
        _ => {
            st.count(Counter::StunReq);
            Action::from_u32(cfg.stun)
        }
    };
    match action {
        Action::Drop => {
            st.count(Counter::StunDropped);
            return xdp_action::XDP_DROP;
        }
        Action::Pass => {
            st.count(Counter::StunPassed);
            return xdp_action::XDP_PASS;
        }
        Action::Answer => {}
    }
    if p.is_v4 {
        s.reflexive.addr[..4].copy_from_slice(&s.src[12..16]);
    } else {
        s.reflexive.addr = s.src;
    }
    s.reflexive.is_v4 = p.is_v4;
    s.reflexive.port = p.sport;
    s.stun_id.copy_from_slice(&s.buf[4..20]);
    // Every byte up to `out_len` is written; the rest is never read.
    let out_len = build_binding_success(&mut s.out, &s.stun_id, generation, &s.reflexive);
    let payload = csum::stun_keepalive_sum(s, plen);
    answer(
        ctx,
        cfg,
        p,
        s,
        plen,
        payload,
        Payload::Out(out_len),
        KIND_STUN,
        Counter::StunResp,
        st,
    )
}

/// Whether the packet's checksums are right (or not to be checked): the
/// request's `plen` payload bytes are summed from `payload` when the
/// caller knows them, else from the scratch copy.
#[inline(always)]
fn verified(
    ctx: &XdpContext,
    cfg: &Config,
    p: &Udp,
    s: &mut Scratch,
    plen: usize,
    payload: Option<u64>,
) -> bool {
    if cfg.verify_checksums == 0 {
        return true;
    }
    let sum = match payload {
        Some(sum) => sum,
        // Longer than the copy: it cannot be checked, so it is not trusted.
        None if plen > BUF_LEN => return false,
        None => match csum::buf_sum(s, plen) {
            Some(sum) => sum,
            None => return false,
        },
    };
    reply::checksums_ok(ctx, p, s, plen, sum)
}

/// The common tail of every answer: refusal rules, checksum check, peer
/// bookkeeping, rewrite and XDP_TX.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn answer(
    ctx: &XdpContext,
    cfg: &Config,
    p: &Udp,
    s: &mut Scratch,
    plen: usize,
    payload: Option<u64>,
    answer: Payload,
    kind: u32,
    sent: Counter,
    st: Counters,
) -> u32 {
    if let Some(refused) = guard::refuse(ctx, cfg, p, s) {
        st.count(refused);
        return xdp_action::XDP_PASS;
    }
    if !verified(ctx, cfg, p, s, plen, payload) {
        st.count(Counter::PassBadChecksum);
        return xdp_action::XDP_PASS;
    }
    // Last, so only a packet about to be answered takes a token: spoofed
    // packets that fail a check cannot drain another source's bucket.
    // A tick-grained clock: the bucket and the peer cache's second need no
    // finer one, and reading the clock source costs more than the rest of
    // a pong.
    let now = clock::now(cfg);
    if guard::over_rate(cfg, p, s, now) {
        st.count(Counter::DropRateLimit);
        debug!(ctx, "over the answer rate: source port {}", p.sport);
        return xdp_action::XDP_DROP;
    }
    peers::note_peer(cfg, p, s, kind, now);
    match reply::transmit(ctx, p, s, answer) {
        Some(action) => {
            st.count(sent);
            action
        }
        None => {
            guard::refund(cfg, s);
            st.count(Counter::PassMalformed);
            xdp_action::XDP_PASS
        }
    }
}

#[inline(always)]
fn sip_message(
    ctx: &XdpContext,
    cfg: &Config,
    p: &Udp,
    s: &mut Scratch,
    plen: usize,
    st: Counters,
) {
    let method = match sip::start_line(s) {
        sip::Start::NotSip => {
            st.count(Counter::Other);
            return;
        }
        sip::Start::Response(class) => {
            st.count(Counter::SipResponses);
            st.count_index(Counter::Resp1xx as u32 + (class as u32 - 1));
            return;
        }
        sip::Start::Request(m) => m,
    };
    // Park the method so the scan below is verified once, not per method.
    s.sip_kind = method as u32;
    let kind = unsafe { core::ptr::read_volatile(&s.sip_kind) } & 0xf;
    let method = Method::from_index(kind);
    sip::scan(s);
    if !sip::request_line_ok(s) {
        st.count(Counter::Other);
        return;
    }
    let in_dialog = sip::to_has_tag(s);
    let has_body = sip::has_body(s);
    st.count(Counter::SipRequests);
    st.count_index(sip_request_index(kind, in_dialog, has_body));
    if has_body {
        return;
    }
    let options = method == Method::Options && !in_dialog;
    if !options && (!in_dialog || !method.is_session_keepalive()) {
        return;
    }
    // State moves only for a packet whose checksums hold: a spoofed copy
    // with a bad one must not refresh a peer or a dialog.
    let hash = if options { None } else { sip::callid_hash(s) };
    if !verified(ctx, cfg, p, s, plen, None) {
        st.count(Counter::PassBadChecksum);
        return;
    }
    peers::note_peer(cfg, p, s, KIND_SIP, clock::now(cfg));
    if options {
        return;
    }
    // The fine clock: a dialog's keep-alive time is CLOCK_MONOTONIC, and
    // read only here, after the scan that costs far more.
    let now = unsafe { bpf_ktime_get_ns() };
    let known = match hash {
        Some(hash) => match DIALOGS.get_ptr_mut(&hash) {
            Some(d) => {
                unsafe {
                    atomic_add(&raw mut (*d).ka_count, 1);
                    (*d).last_ka_ns = now;
                }
                true
            }
            None => false,
        },
        None => false,
    };
    st.count(if known {
        Counter::KaInDialog
    } else {
        Counter::KaUnknownDialog
    });
}

/// Passes everything. The lab attaches it to the far end of a veth pair:
/// native XDP_TX on veth needs an XDP program on the peer device.
#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Sends an IPv4/UDP frame straight back: Ethernet, IP addresses and
/// UDP ports swapped (which leaves both checksums right), XDP_TX. The
/// least an answering program can do; never attached, the bench times
/// it beside the real paths as the floor of an answer on this machine.
#[xdp]
pub fn xdp_echo(ctx: XdpContext) -> u32 {
    const LEN: usize = ETH_HLEN + IPV4_MIN_HLEN + 8;
    let Ok(frame) = ptr_at::<[u8; LEN]>(&ctx, 0) else {
        return xdp_action::XDP_PASS;
    };
    let eth = frame as *mut EthHdr;
    let ip = unsafe { (frame as *mut u8).add(ETH_HLEN) } as *mut Ipv4Hdr;
    let udp = unsafe { (frame as *mut u8).add(ETH_HLEN + IPV4_MIN_HLEN) } as *mut UdpHdr;
    unsafe {
        if be16((*eth).proto) != ETH_P_IP || (*ip).ver_ihl != 0x45 || (*ip).proto != IPPROTO_UDP {
            return xdp_action::XDP_PASS;
        }
        core::mem::swap(&mut (*eth).src, &mut (*eth).dst);
        core::mem::swap(&mut (*ip).src, &mut (*ip).dst);
        core::mem::swap(&mut (*udp).source, &mut (*udp).dest);
    }
    xdp_action::XDP_TX
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
