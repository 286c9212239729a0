//! Real phones through the edge: two Debian user agents (baresip and
//! baresip, linphone calling baresip, baresip calling linphone) register
//! through sip-ka's edge to Kamailio (registrar and proxy, the PBX), call
//! each other, stay in the call for several keep-alive intervals and hang
//! up, over UDP, TCP and TLS toward the edge, with RFC 5626 outbound where
//! the phone does it. The phones' keep-alives are answered by sip-ka and
//! counted; Kamailio logs every request and reply it gets, so the test
//! sees that none of the phones' keep-alives (nor the OPTIONS a phone
//! sends) reached it, and that nothing went around the edge.

// The shared helpers re-export what other tests use and this one does not.
#[allow(unused_imports)]
mod common;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use common::{
    edge::{start_edge, EDGE_PORT},
    kamailio::{tail, Kamailio, TempDir},
};
use sip_ka::lab::{self, Lab, CLIENT_V4, SERVER_V4};

/// The Flow-Timer the edge gives phones on UDP (seconds): their
/// keep-alive interval (RFC 5626 4.4.1: sent at 80 to 100 % of it).
const FLOW_TIMER_UDP: u64 = 3;
/// The Flow-Timer for phones on TCP/TLS: baresip's libre (1.1) never
/// sends CRLF keep-alives more often than every 20 s, whatever the
/// Flow-Timer says.
const FLOW_TIMER_STREAM: u64 = 20;
/// How many keep-alive intervals the call is held.
const HOLD_INTERVALS: u64 = 3;

/// Longer than the daemon's period of publishing the edge's counters
/// into STATS (500 ms), so a read after it sees what happened before.
const PUBLISHED: Duration = Duration::from_secs(1);

/// Each phone's log tail, for a failure message.
fn phone_logs(phones: &[&dyn Phone]) -> String {
    phones
        .iter()
        .map(|p| format!("{} log tail:\n{}", p.name(), tail(&p.log(), 25)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The transport a phone uses toward the edge.
#[derive(Clone, Copy, PartialEq)]
enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// One baresip phone in the client namespace, on its own SIP port, with
/// its console (the `cons` module) on a UDP port of the client address.
/// Runs under `timeout`; SIGTERM (passed on by `timeout`) when dropped.
struct Baresip {
    name: &'static str,
    transport: Transport,
    child: Option<Child>,
    log: PathBuf,
    console: SocketAddr,
}

impl Baresip {
    /// baresip's configuration: no sound device (`ausine` sends a tone,
    /// no player), G.711, the console, and `uuid` for the
    /// `+sip.instance` outbound needs; the account registers through the
    /// edge as outbound proxy, answers calls itself and uses outbound.
    fn start(
        lab: &Lab,
        dir: &Path,
        name: &'static str,
        sip_port: u16,
        transport: Transport,
        ca: Option<&Path>,
    ) -> Baresip {
        let conf = dir.join(name);
        std::fs::create_dir_all(&conf).expect("baresip dir");
        let console = SocketAddr::new(CLIENT_V4.into(), sip_port + 1000);
        let ca_line = ca
            .map(|c| format!("sip_cafile\t\t{}\n", c.display()))
            .unwrap_or_default();
        let config = format!(
            "poll_method\t\tepoll\n\
             sip_listen\t\t{CLIENT_V4}:{sip_port}\n\
             {ca_line}\
             audio_source\t\tausine,440\n\
             audio_alert\t\tausine,440\n\
             ausrc_srate\t\t48000\n\
             ausrc_channels\t\t2\n\
             module_path\t\t/usr/lib/baresip/modules\n\
             module\t\t\tg711.so\n\
             module\t\t\tausine.so\n\
             module\t\t\tcons.so\n\
             module_tmp\t\tuuid.so\n\
             module_app\t\taccount.so\n\
             module_app\t\tmenu.so\n\
             cons_listen\t\t{console}\n"
        );
        std::fs::write(conf.join("config"), config).expect("baresip config");
        let t = transport.name();
        let account = format!(
            "<sip:{name}@{SERVER_V4};transport={t}>;auth_pass=none;\
             outbound=\"sip:{SERVER_V4}:{EDGE_PORT};transport={t}\";\
             regint=300;sipnat=outbound;regid=1;answermode=auto\n"
        );
        std::fs::write(conf.join("accounts"), account).expect("baresip accounts");
        let log = conf.join("baresip.log");
        let file = std::fs::File::create(&log).expect("baresip.log");
        let child = lab
            .client("timeout")
            .args(["-k", "2", "120", "baresip", "-f"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log fd"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting baresip (Debian package baresip-core): {e}"));
        Baresip {
            name,
            transport,
            child: Some(child),
            log,
            console,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A console command (`/dial URI`, `/hangup`).
    fn command(&self, lab: &Lab, cmd: &str) {
        let sock = common::client_socket(lab, SocketAddr::new(CLIENT_V4.into(), 0));
        sock.send_to(format!("{cmd}\n").as_bytes(), self.console)
            .unwrap_or_else(|e| panic!("sending `{cmd}` to {}'s console: {e}", self.name));
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            common::terminate(&mut c, Duration::from_secs(5));
        }
    }
}

/// How a phone keeps its flow open, and where the edge counts its
/// answers to it.
#[derive(Clone, Copy, PartialEq)]
enum KeepAlive {
    /// STUN Binding requests on UDP (RFC 5626 outbound: baresip).
    Stun,
    /// CRLFCRLF datagrams on UDP (linphone).
    CrlfDatagram,
    /// CRLFCRLF on a TCP or TLS connection.
    CrlfStream,
}

impl KeepAlive {
    fn what(self) -> &'static str {
        match self {
            KeepAlive::Stun => "STUN on UDP",
            KeepAlive::CrlfDatagram => "CRLFCRLF on UDP",
            KeepAlive::CrlfStream => "CRLFCRLF on connections",
        }
    }

    /// The counters of the answers: the XDP program's and, for what it
    /// passes, the daemon's responder's (UDP); the edge's (connections).
    fn counters(self) -> &'static [&'static str] {
        match self {
            KeepAlive::Stun => &["stun_req", "stun_classic", "user_stun_req"],
            KeepAlive::CrlfDatagram => &["crlf_ping", "user_crlf_ping"],
            KeepAlive::CrlfStream => &["edge_crlf_pings"],
        }
    }
}

/// A phone the test drives; its log is shown when a step does not happen.
trait Phone {
    fn name(&self) -> &str;
    fn log(&self) -> String;
    /// Starts a call to `uri`.
    fn dial(&self, lab: &Lab, uri: &str);
    fn hang_up(&self, lab: &Lab);
    /// The keep-alive it sends, and at most how many seconds apart.
    fn keepalive(&self) -> (KeepAlive, u64);
    /// Whether its REGISTERs are RFC 5626 outbound ones.
    fn outbound(&self) -> bool;
    /// Sends an OPTIONS to `uri` (through its outbound proxy, the edge);
    /// false if the phone has no way to.
    fn send_options(&self, lab: &Lab, uri: &str) -> bool;
}

impl Phone for Baresip {
    fn name(&self) -> &str {
        self.name
    }
    fn log(&self) -> String {
        Baresip::log(self)
    }
    fn dial(&self, lab: &Lab, uri: &str) {
        self.command(lab, &format!("/dial {uri}"));
    }
    fn hang_up(&self, lab: &Lab) {
        self.command(lab, "/hangup");
    }
    fn keepalive(&self) -> (KeepAlive, u64) {
        match self.transport {
            Transport::Udp => (KeepAlive::Stun, FLOW_TIMER_UDP),
            Transport::Tcp | Transport::Tls => (KeepAlive::CrlfStream, FLOW_TIMER_STREAM),
        }
    }
    fn outbound(&self) -> bool {
        true
    }
    fn send_options(&self, lab: &Lab, uri: &str) -> bool {
        self.command(lab, &format!("/options {uri}"));
        true
    }
}

/// linphone's keep-alive period (seconds). It does not do outbound, so
/// the edge's Flow-Timer does not set it: `keepalive_period` does, on
/// connections too once `tcp_tls_keepalive` is on.
const LINPHONE_KEEPALIVE: u64 = 3;

/// Debian's linphone (`linphone-daemon` of linphone-cli) in the client
/// namespace, driven by commands on its stdin, answering calls by itself
/// (`--auto-answer`). It does not do RFC 5626 outbound: it registers
/// plainly and sends CRLFCRLF keep-alives every `keepalive_period`, over
/// UDP or over its connection.
/// liblinphone only starts once its database directory exists, hence
/// HOME in the scratch directory. Its network monitor calls the network
/// down (and unregisters) where there is no default route, so the client
/// namespace gets one, toward the server namespace
/// ([`default_route_for_linphone`]).
struct Linphone {
    name: &'static str,
    transport: Transport,
    child: Option<Child>,
    stdin: Option<std::process::ChildStdin>,
    log: PathBuf,
}

impl Linphone {
    /// `ca`: the certificate it trusts for TLS (it checks the chain and
    /// that the name matches the edge's address).
    fn start(
        lab: &Lab,
        dir: &Path,
        name: &'static str,
        sip_port: u16,
        transport: Transport,
        ca: Option<&Path>,
    ) -> Linphone {
        let home = dir.join(name);
        std::fs::create_dir_all(home.join(".local/share/linphone")).expect("linphone home");
        let rc = home.join("linphonerc");
        // Only the transport under test listens; 0 turns the others off.
        let port = |t: Transport| if t == transport { sip_port } else { 0 };
        let tls = ca
            .map(|ca| {
                format!(
                    "root_ca={}\nverify_server_certs=1\nverify_server_cn=1\n",
                    ca.display()
                )
            })
            .unwrap_or_default();
        let config = format!(
            "[sip]\nsip_port={udp}\nsip_tcp_port={tcp}\nsip_tls_port={tls_port}\n\
             default_proxy=0\nkeepalive_period={keepalive_ms}\ntcp_tls_keepalive=1\n\
             {tls}\
             [rtp]\naudio_rtp_port={rtp}\n\
             [proxy_0]\nreg_proxy=<sip:{SERVER_V4}:{EDGE_PORT};transport={t}>\n\
             reg_identity=sip:{name}@{SERVER_V4}\nreg_expires=300\n\
             reg_sendregister=1\npublish=0\n",
            udp = port(Transport::Udp),
            tcp = port(Transport::Tcp),
            tls_port = port(Transport::Tls),
            keepalive_ms = LINPHONE_KEEPALIVE * 1000,
            rtp = sip_port + 10000,
            t = transport.name(),
        );
        std::fs::write(&rc, config).expect("linphonerc");
        let log = home.join("linphone.log");
        let out = home.join("linphone.out");
        let mut child = lab
            .client("timeout")
            .args(["-k", "2", "150", "env"])
            .arg(format!("HOME={}", home.display()))
            .args(["linphone-daemon", "--auto-answer", "--config"])
            .arg(&rc)
            .arg("--log")
            .arg(&log)
            // Its command loop reads stdin: kept open (piped) until it ends.
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(&out).expect("linphone.out"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting linphone-daemon (Debian package linphone-cli): {e}")
            });
        let stdin = child.stdin.take();
        Linphone {
            name,
            transport,
            child: Some(child),
            stdin,
            log,
        }
    }

    /// A linphone-daemon command (`call URI`, `terminate`).
    fn command(&self, cmd: &str) {
        use std::io::Write as _;
        let mut stdin = self.stdin.as_ref().expect("linphone-daemon stdin");
        stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("sending `{cmd}` to linphone-daemon: {e}"));
    }
}

impl Phone for Linphone {
    fn name(&self) -> &str {
        self.name
    }
    fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter(|l| !l.contains("mediastreamer") && !l.contains("ortp-"))
            .collect::<Vec<_>>()
            .join("\n")
    }
    fn dial(&self, _lab: &Lab, uri: &str) {
        self.command(&format!("call {uri}"));
    }
    fn hang_up(&self, _lab: &Lab) {
        self.command("terminate");
    }
    fn keepalive(&self) -> (KeepAlive, u64) {
        match self.transport {
            Transport::Udp => (KeepAlive::CrlfDatagram, LINPHONE_KEEPALIVE),
            Transport::Tcp | Transport::Tls => (KeepAlive::CrlfStream, LINPHONE_KEEPALIVE),
        }
    }
    fn outbound(&self) -> bool {
        false
    }
    fn send_options(&self, _lab: &Lab, _uri: &str) -> bool {
        // linphone-daemon has no command that sends one.
        false
    }
}

impl Drop for Linphone {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            common::terminate(&mut c, Duration::from_secs(5));
        }
    }
}

/// A default route in the client namespace, toward the server one
/// (liblinphone's network monitor wants one; the lab has none).
fn default_route_for_linphone(lab: &Lab) {
    let route = lab
        .client("ip")
        .args(["route", "add", "default", "via"])
        .arg(SERVER_V4.to_string())
        .output()
        .expect("ip route add default in the client namespace");
    assert!(
        route.status.success(),
        "ip route add default: {}",
        common::text(&route)
    );
}

/// Which user agent plays a part in the call.
#[derive(Clone, Copy, PartialEq)]
enum Ua {
    Baresip,
    Linphone,
}

impl Ua {
    fn name(self) -> &'static str {
        match self {
            Ua::Baresip => "baresip",
            Ua::Linphone => "linphone",
        }
    }
}

/// One call between two phones over `transport` toward the edge.
struct Call {
    transport: Transport,
    caller: Ua,
    callee: Ua,
    /// OPTIONS the caller sends to the registrar's domain during the
    /// call, one per keep-alive interval (baresip's `/options`; neither
    /// phone sends OPTIONS keep-alives of its own).
    options: u64,
}

/// The phone that plays `ua` as caller or callee: baresip alice (caller)
/// and bob (callee), linphone carol (caller) and dave (callee), each on
/// its own SIP port.
fn start_phone(
    lab: &Lab,
    dir: &Path,
    ua: Ua,
    caller: bool,
    call: &Call,
    ca: Option<&Path>,
) -> Box<dyn Phone> {
    match (ua, caller) {
        (Ua::Baresip, true) => {
            Box::new(Baresip::start(lab, dir, "alice", 5062, call.transport, ca))
        }
        (Ua::Baresip, false) => Box::new(Baresip::start(lab, dir, "bob", 5064, call.transport, ca)),
        (Ua::Linphone, caller) => {
            let (name, port) = if caller {
                ("carol", 5066)
            } else {
                ("dave", 5068)
            };
            Box::new(Linphone::start(lab, dir, name, port, call.transport, ca))
        }
    }
}

/// The whole call: both phones registered through the edge (Kamailio's
/// registrar saved them, over the transport asked for), the caller calls
/// the callee (Kamailio relays the INVITE back through the edge to the
/// callee's flow and sees the 200), the call is held for several
/// keep-alive intervals and hung up (Kamailio sees the 200 to the BYE)
/// and the edge keeps no dialog; the edge answered the phones'
/// keep-alives and Kamailio got none of them.
fn call_through_the_edge(call: Call) {
    common::require_env();
    for (tool, package) in [
        ("baresip", "baresip-core"),
        ("kamailio", "kamailio"),
        ("linphone-daemon", "linphone-cli"),
    ] {
        assert!(
            lab::on_path(tool).is_some(),
            "the phones test needs `{tool}` (Debian package {package}): `cargo xtask setup`"
        );
    }
    let transport = call.transport;
    let dir = TempDir::new(&format!(
        "{}-{}-{}",
        call.caller.name(),
        call.callee.name(),
        transport.name()
    ));
    let (ft_udp, ft_stream) = (FLOW_TIMER_UDP.to_string(), FLOW_TIMER_STREAM.to_string());
    let mut flags = vec!["--flow-timer-udp", &ft_udp, "--flow-timer-tcp", &ft_stream];
    let (cert, key);
    let tls;
    if transport == Transport::Tls {
        (cert, key) = common::edge::lab_certificate(&dir.0);
        tls = [cert.display().to_string(), key.display().to_string()];
        flags.extend(["--tls-cert", &tls[0], "--tls-key", &tls[1]]);
    }
    let lab = start_edge(&flags);
    let kam = Kamailio::start(&lab, &dir.0);
    // The edge's qualify reaches Kamailio: it is up and the edge knows it.
    kam.wait_for(
        "SKA-REQ OPTIONS vias=1",
        1,
        Duration::from_secs(10),
        &String::new,
    );

    let ca = (transport == Transport::Tls).then(|| dir.0.join("cert.pem"));
    if call.caller == Ua::Linphone || call.callee == Ua::Linphone {
        default_route_for_linphone(&lab);
    }
    let start = common::counters(&lab);
    let caller = start_phone(&lab, &dir.0, call.caller, true, &call, ca.as_deref());
    let callee = start_phone(&lab, &dir.0, call.callee, false, &call, ca.as_deref());
    let phones: Vec<&dyn Phone> = vec![caller.as_ref(), callee.as_ref()];
    kam.wait_for("SKA-REGISTERED", 2, Duration::from_secs(15), &|| {
        phone_logs(&phones)
    });
    let registered: Vec<String> = kam
        .events()
        .into_iter()
        .filter(|e| e.starts_with("SKA-REGISTERED"))
        .collect();
    for who in [caller.name(), callee.name()] {
        assert!(
            registered
                .iter()
                .any(|e| e == &format!("SKA-REGISTERED {who}")),
            "{who} not registered at Kamailio: {registered:?}"
        );
    }
    std::thread::sleep(PUBLISHED);
    let before = common::counters(&lab);
    // RFC 5626: the baresip REGISTERs were outbound ones (reg-id,
    // +sip.instance, Supported: path) and got the edge's Path with a flow
    // token, over the transport asked for.
    let outbound = common::delta(&start, &before).get("edge_registers_outbound");
    let want_outbound = phones.iter().filter(|p| p.outbound()).count() as u64;
    assert!(
        outbound >= want_outbound,
        "outbound REGISTERs through the edge: {outbound}, want >= {want_outbound}"
    );
    let via = format!("phone-via=SIP/2.0/{}", transport.name().to_uppercase());
    let registers: Vec<String> = kam
        .events()
        .into_iter()
        .filter(|e| e.starts_with("SKA-REQ REGISTER"))
        .collect();
    assert!(
        registers.iter().all(|e| e.contains(&via)),
        "REGISTERs not sent over {}: {registers:?}",
        transport.name()
    );

    // The shortest keep-alive interval of the two sets the hold; a phone
    // with a longer one (baresip on a connection: 20 s) may send none
    // during it, and is not counted on.
    let interval = phones
        .iter()
        .map(|p| p.keepalive().1)
        .min()
        .unwrap_or(FLOW_TIMER_UDP);
    // A few seconds over the intervals: a phone's first keep-alive may
    // come a full interval after its registration.
    let hold = Duration::from_secs(HOLD_INTERVALS * interval + 4);
    let callee_uri = format!("sip:{}@{SERVER_V4}", callee.name());
    caller.dial(&lab, &callee_uri);
    kam.wait_for("SKA-REPLY 200 INVITE", 1, Duration::from_secs(15), &|| {
        phone_logs(&phones)
    });
    let held = Instant::now();
    // OPTIONS to the domain, as a phone doing OPTIONS keep-alives sends
    // them: the edge answers them for the PBX.
    let domain = format!("sip:{SERVER_V4}");
    for _ in 0..call.options {
        assert!(
            caller.send_options(&lab, &domain),
            "{} cannot send OPTIONS",
            caller.name()
        );
        std::thread::sleep(Duration::from_secs(interval));
    }
    std::thread::sleep(hold.saturating_sub(held.elapsed()));
    // The call is still up at both ends after the hold.
    assert_eq!(
        kam.count("SKA-REQ BYE"),
        0,
        "the call ended during the hold: {:?}",
        kam.events()
    );
    caller.hang_up(&lab);
    kam.wait_for("SKA-REPLY 200 BYE", 1, Duration::from_secs(15), &|| {
        phone_logs(&phones)
    });
    assert!(
        common::wait_until(Duration::from_secs(5), || common::edge::dialogs(&lab)
            .is_empty()),
        "the edge still holds dialogs after the hang-up: {:?}",
        common::edge::dialogs(&lab)
    );
    std::thread::sleep(PUBLISHED);
    let after = common::counters(&lab);
    let d = common::delta(&before, &after);

    // Keep-alives: each phone counted on sends one at least every
    // `interval`, so at least HOLD_INTERVALS over the hold, answered by
    // XDP (or, when passed, by the userspace responder) on UDP and by the
    // edge on connections.
    let mut wanted: Vec<(KeepAlive, u64)> = Vec::new();
    for p in &phones {
        let (kind, every) = p.keepalive();
        if every > interval {
            continue;
        }
        match wanted.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += HOLD_INTERVALS,
            None => wanted.push((kind, HOLD_INTERVALS)),
        }
    }
    let mut answered = 0;
    for (kind, want) in &wanted {
        let got: u64 = kind.counters().iter().map(|c| d.get(c)).sum();
        answered += got;
        assert!(
            got >= *want,
            "{}: the edge answered {got} keep-alives ({}) from the phones during the call \
             (want >= {want}); counters that moved: {:?}",
            transport.name(),
            kind.what(),
            d.0
        );
    }
    if call.options > 0 {
        // The edge answered each OPTIONS itself (200: the PBX is up) and
        // the phone got the answers; Kamailio got none of them (below).
        let answered = d.get("edge_options_pbx_up") + d.get("edge_options_edge");
        assert_eq!(
            answered,
            call.options,
            "OPTIONS from {} answered by the edge; counters that moved: {:?}",
            caller.name(),
            d.0
        );
        let log = caller.log();
        let replies = log.matches("----- OPTIONS of ").count() as u64;
        assert_eq!(
            replies,
            call.options,
            "answers to OPTIONS in {}'s log:\n{}",
            caller.name(),
            tail(&log, 30)
        );
    }
    // None reached Kamailio: the only OPTIONS it got are the edge's own
    // qualify (one Via), and no keep-alive bytes made it to its parser.
    let events = kam.events();
    // And nothing went around the edge: every request of a phone and
    // every answer Kamailio got came from the edge's SIP address (the
    // lab's namespaces would let Kamailio reach a phone directly).
    let edge = format!("src={}", common::edge::edge_addr());
    let around: Vec<&String> = events
        .iter()
        .filter(|e| {
            (e.starts_with("SKA-REPLY") || e.starts_with("SKA-REQ"))
                && !e.starts_with("SKA-REQ OPTIONS vias=1 ")
                && !e.split_whitespace().any(|w| w == edge)
        })
        .collect();
    assert!(
        around.is_empty(),
        "Kamailio got these not through the edge: {around:?}"
    );
    let relayed_options: Vec<&String> = events
        .iter()
        .filter(|e| e.starts_with("SKA-REQ OPTIONS") && !e.starts_with("SKA-REQ OPTIONS vias=1 "))
        .collect();
    assert!(
        relayed_options.is_empty(),
        "Kamailio got the phones' OPTIONS: {relayed_options:?}"
    );
    let log = kam.log();
    for junk in ["parse_msg", "bad message", "ERROR"] {
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(junk)).collect();
        assert!(
            lines.is_empty(),
            "Kamailio logged `{junk}` (a keep-alive reached it?):\n{}",
            lines.join("\n")
        );
    }
    // Only SIP requests of the call and registration otherwise.
    for e in events.iter().filter(|e| e.starts_with("SKA-REQ ")) {
        let method = e.split_whitespace().nth(1).unwrap_or("");
        assert!(
            ["REGISTER", "INVITE", "ACK", "BYE", "OPTIONS"].contains(&method),
            "Kamailio got an unexpected request: {e}"
        );
    }
    eprintln!(
        "phones ({} calls {}) over {}: keep-alives answered by the edge during the {}s \
         call: {answered}; Kamailio events: {}; counters that moved: {:?}",
        caller.name(),
        callee.name(),
        transport.name(),
        hold.as_secs(),
        events.len(),
        d.0
    );
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn phones_baresip_call_through_the_edge_over_udp() {
    call_through_the_edge(Call {
        transport: Transport::Udp,
        caller: Ua::Baresip,
        callee: Ua::Baresip,
        options: 0,
    });
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn phones_linphone_calls_baresip_through_the_edge_over_udp() {
    call_through_the_edge(Call {
        transport: Transport::Udp,
        caller: Ua::Linphone,
        callee: Ua::Baresip,
        options: 0,
    });
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn phones_linphone_calls_baresip_through_the_edge_over_tcp() {
    call_through_the_edge(Call {
        transport: Transport::Tcp,
        caller: Ua::Linphone,
        callee: Ua::Baresip,
        options: 0,
    });
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn phones_linphone_calls_baresip_through_the_edge_over_tls() {
    call_through_the_edge(Call {
        transport: Transport::Tls,
        caller: Ua::Linphone,
        callee: Ua::Baresip,
        options: 0,
    });
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn phones_baresip_calls_linphone_through_the_edge_over_udp() {
    call_through_the_edge(Call {
        transport: Transport::Udp,
        caller: Ua::Baresip,
        callee: Ua::Linphone,
        options: HOLD_INTERVALS,
    });
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn phones_baresip_call_through_the_edge_over_tcp() {
    call_through_the_edge(Call {
        transport: Transport::Tcp,
        caller: Ua::Baresip,
        callee: Ua::Baresip,
        options: 0,
    });
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn phones_baresip_call_through_the_edge_over_tls() {
    call_through_the_edge(Call {
        transport: Transport::Tls,
        caller: Ua::Baresip,
        callee: Ua::Baresip,
        options: 0,
    });
}
