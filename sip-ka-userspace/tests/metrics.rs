//! The Prometheus endpoint in a lab: the edge with `--metrics` on an
//! address of the server namespace, scraped over the veth with curl after
//! a known number of CRLF pings, STUN requests (both generations),
//! OPTIONS and a TCP CRLF ping; the counters must move by exactly those
//! numbers, the gauges follow the PBX and a call, and Debian's promtool
//! must accept the page. Then Debian's `prometheus` server scrapes the
//! daemon and its HTTP API must return the pings sent.
//!
//! Needs root, sipp, curl, prometheus and promtool (`cargo xtask setup`); fails and
//! says so otherwise.

#[allow(unused_imports)] // helpers the other end-to-end tests use
mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{
    client_socket,
    edge::{edge_addr, sipp_in, start_edge, Sipp, PBX_PORT},
    exchange, in_ns, parse_success, text, txid, wait_until, ANSWER_WAIT,
};
use sip_ka::lab::{
    self,
    packet::{Stun, CRLF_PING, CRLF_PONG},
    Lab, CLIENT_V4, SERVER_V4,
};

/// Where the daemon serves /metrics: the server's veth address.
const METRICS: &str = "198.18.0.1:9560";
const UA_PORT: u16 = 5062;

/// `curl` from the client namespace: the page, or a panic with why not.
fn scrape(lab: &Lab) -> String {
    let out = lab::run(
        lab.client("curl")
            .args(["-sS", "--fail", "--max-time", "5"])
            .arg(format!("http://{METRICS}/metrics")),
    )
    .unwrap_or_else(|e| panic!("curl http://{METRICS}/metrics: {e:#}"));
    String::from_utf8(out.stdout).expect("the page is UTF-8")
}

/// `series -> value` of a page (series as written: name{labels}).
fn parse(page: &str) -> BTreeMap<String, f64> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (s, v) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            let v: f64 = v.parse().unwrap_or_else(|_| panic!("bad value in {l:?}"));
            (s.to_string(), v)
        })
        .collect()
}

fn get(page: &BTreeMap<String, f64>, series: &str) -> f64 {
    *page
        .get(series)
        .unwrap_or_else(|| panic!("{series} not on the page: {:?}", page.keys()))
}

/// `promtool check metrics` on the page (stdin); panics with its report.
fn promtool_check(page: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool (Debian package prometheus, `cargo xtask setup`): {e}")
        });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(page.as_bytes())
        .expect("writing to promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics refused the page: {}\n{page}",
        text(&out)
    );
}

/// Every metric name in the Grafana dashboard's queries.
fn dashboard_names() -> BTreeSet<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../packaging/grafana/sip-ka.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut names = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("sipka_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    assert!(names.len() >= 6, "dashboard names: {names:?}");
    names
}

fn options(i: u32, local: SocketAddr) -> Vec<u8> {
    format!(
        "OPTIONS sip:100@{SERVER_V4}:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bKmetrics{i};rport\r\n\
         From: <sip:ua@{local}>;tag=m{i}\r\n\
         To: <sip:100@{SERVER_V4}>\r\n\
         Call-ID: metrics-{i}@{local}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn metrics_count_exactly_what_was_sent_and_promtool_accepts_the_page() {
    let started = Instant::now();
    let lab = start_edge(&["--metrics", METRICS]);
    let dir = std::env::temp_dir().join(format!("{}-metrics", lab.name));
    std::fs::create_dir_all(&dir).unwrap();
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/edge");
    std::fs::copy(here.join("pbx_uas.xml"), dir.join("pbx_uas.xml")).unwrap();
    std::fs::write(dir.join("ua_call.xml"), lab::edge_ua_scenario(&[], 4000)).unwrap();

    // The PBX (sipp) answers the edge's qualify OPTIONS and one call.
    let mut pbx = sipp_in(&lab, false, &dir, 60);
    pbx.args(["-sf", "pbx_uas.xml"])
        .args(["-i", &SERVER_V4.to_string(), "-p", &PBX_PORT.to_string()])
        .args(["-recv_timeout", "20000"]);
    let pbx = Sipp::spawn(pbx, "PBX");
    let mut page = BTreeMap::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            page = parse(&scrape(&lab));
            page.get("sipka_pbx_up") == Some(&1.0)
        }),
        "sipka_pbx_up never 1: {page:?}"
    );
    let before = parse(&scrape(&lab));

    const CRLF: u32 = 20;
    const STUN: u32 = 15;
    const CLASSIC: u32 = 5;
    const OPTIONS: u32 = 10;
    let sock = client_socket(&lab, SocketAddr::new(CLIENT_V4.into(), 0));
    let local = sock.local_addr().unwrap();
    let to = edge_addr();
    for i in 0..CRLF {
        let r = exchange(&sock, to, CRLF_PING, ANSWER_WAIT);
        assert_eq!(r.map(|r| r.0), Some(CRLF_PONG.to_vec()), "ping {i}");
    }
    for i in 0..STUN {
        let req = Stun::binding_request(txid(i)).fingerprint().build();
        let (r, _) = exchange(&sock, to, &req, ANSWER_WAIT).unwrap_or_else(|| panic!("STUN {i}"));
        parse_success(&r).unwrap_or_else(|e| panic!("STUN {i}: {e}"));
    }
    for i in 0..CLASSIC {
        // RFC 3489: 16 bytes of id, no magic cookie.
        let mut id = [0x5a; 16];
        id[4..].copy_from_slice(&txid(100 + i));
        let req = Stun::classic_binding_request(id).build();
        let (r, _) =
            exchange(&sock, to, &req, ANSWER_WAIT).unwrap_or_else(|| panic!("classic {i}"));
        parse_success(&r).unwrap_or_else(|e| panic!("classic STUN {i}: {e}"));
    }
    for i in 0..OPTIONS {
        let (r, _) = exchange(&sock, to, &options(i, local), ANSWER_WAIT)
            .unwrap_or_else(|| panic!("OPTIONS {i}: no answer"));
        let r = String::from_utf8_lossy(&r);
        assert!(r.starts_with("SIP/2.0 200 "), "OPTIONS {i}: {r}");
    }
    // One TCP connection with one CRLF ping, kept open over the scrape.
    let mut tcp = in_ns(&lab.client_ns, move || {
        TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect("TCP to the edge")
    });
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(CRLF_PING).unwrap();
    let mut pong = [0u8; 2];
    tcp.read_exact(&mut pong).expect("pong on TCP");
    assert_eq!(&pong, CRLF_PONG);

    let raw = scrape(&lab);
    let after = parse(&raw);
    let delta = |s: &str| get(&after, s) - get(&before, s);
    let want: &[(&str, u32)] = &[
        (
            r#"sipka_keepalives_received_total{path="xdp",kind="crlf"}"#,
            CRLF,
        ),
        (
            r#"sipka_keepalives_total{path="xdp",kind="crlf",action="answered"}"#,
            CRLF,
        ),
        (
            r#"sipka_keepalives_total{path="xdp",kind="crlf",action="dropped"}"#,
            0,
        ),
        (
            r#"sipka_keepalives_received_total{path="xdp",kind="stun"}"#,
            STUN,
        ),
        (
            r#"sipka_keepalives_received_total{path="xdp",kind="stun_classic"}"#,
            CLASSIC,
        ),
        (
            r#"sipka_keepalives_total{path="xdp",kind="stun",action="answered"}"#,
            STUN + CLASSIC,
        ),
        (
            r#"sipka_keepalives_total{path="xdp",kind="stun",action="passed"}"#,
            0,
        ),
        (
            r#"sipka_keepalives_total{path="responder",kind="crlf",action="answered"}"#,
            0,
        ),
        (
            r#"sipka_sip_requests_total{method="options",in_dialog="false",body="false"}"#,
            OPTIONS,
        ),
        (r#"sipka_xdp_sip_messages_total{type="request"}"#, OPTIONS),
        (
            r#"sipka_keepalives_total{path="edge",kind="options_pbx",action="answered"}"#,
            OPTIONS,
        ),
        (
            r#"sipka_keepalives_total{path="edge",kind="options_pbx",action="rejected"}"#,
            0,
        ),
        (
            r#"sipka_keepalives_total{path="edge",kind="crlf",action="answered"}"#,
            1,
        ),
        ("sipka_edge_connections_accepted_total", 1),
        (
            r#"sipka_xdp_packets_total{outcome="dropped",reason="rate_limit"}"#,
            0,
        ),
        (
            "sipka_xdp_sip_port_datagrams_total",
            CRLF + STUN + CLASSIC + OPTIONS,
        ),
    ];
    let wrong: Vec<String> = want
        .iter()
        .filter(|(s, n)| delta(s) != f64::from(*n))
        .map(|(s, n)| format!("{s}: moved {}, want {n}", delta(s)))
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}\n{raw}");

    // Gauges.
    assert_eq!(get(&after, "sipka_pbx_up"), 1.0);
    let rtt = get(&after, "sipka_pbx_rtt_seconds");
    assert!(rtt > 0.0 && rtt < 1.0, "PBX RTT {rtt} s");
    assert_eq!(get(&after, r#"sipka_connections{transport="tcp"}"#), 1.0);
    assert_eq!(get(&after, r#"sipka_connections{transport="tls"}"#), 0.0);
    // One source sent every UDP keep-alive: one entry in PEERS.
    assert_eq!(get(&after, "sipka_peers"), 1.0);
    assert_eq!(get(&after, "sipka_dialogs"), 0.0);
    let info = format!(
        r#"sipka_build_info{{version="{}",xdp_mode="native",iface="{}"}}"#,
        env!("CARGO_PKG_VERSION"),
        lab.server_if
    );
    assert_eq!(get(&after, &info), 1.0);

    promtool_check(&raw);
    let exposed: BTreeSet<String> = after
        .keys()
        .map(|s| s.split('{').next().unwrap_or_default().to_string())
        .collect();
    let missing: Vec<String> = dashboard_names()
        .into_iter()
        .filter(|n| !exposed.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries {missing:?}, not on the page"
    );
    drop(tcp);

    // A call held for 4 s: one live dialog, then none after the BYE.
    let mut ua = lab.client("timeout");
    ua.current_dir(&dir)
        .args(["-k", "2", "30", "sipp", "-sf", "ua_call.xml", "-t", "u1"])
        .args(["-m", "1", "-nostdin", "-trace_err", "-s", "service"])
        .args(["-i", &CLIENT_V4.to_string(), "-p", &UA_PORT.to_string()])
        .args(["-recv_timeout", "10000"])
        .arg(edge_addr().to_string());
    let ua = Sipp::spawn(ua, "UA");
    assert!(
        wait_until(Duration::from_secs(5), || {
            page = parse(&scrape(&lab));
            page.get("sipka_dialogs") == Some(&1.0)
        }),
        "sipka_dialogs never 1 during the call: {:?}",
        page.get("sipka_dialogs")
    );
    let ua = ua.wait();
    assert!(ua.status.success(), "UA sipp: {}", text(&ua));
    assert!(
        wait_until(Duration::from_secs(5), || {
            page = parse(&scrape(&lab));
            page.get("sipka_dialogs") == Some(&0.0)
        }),
        "sipka_dialogs after the BYE: {:?}",
        page.get("sipka_dialogs")
    );
    let pbx = pbx.finish();
    assert!(pbx.status.success(), "PBX sipp: {}", text(&pbx));
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("metrics lab test: {:?}", started.elapsed());
}

/// Offload mode: the fast path's counters move, and there is no edge:
/// its families are absent from the page, not zero.
#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn offload_mode_page_counts_pings_and_has_no_edge_families() {
    let mut lab = common::lab();
    common::start(&mut lab, &["--xdp-mode", "native", "--metrics", METRICS]);
    let before = parse(&scrape(&lab));
    const CRLF: u32 = 12;
    let sock = client_socket(&lab, SocketAddr::new(CLIENT_V4.into(), 0));
    let to = SocketAddr::new(SERVER_V4.into(), 5060);
    for i in 0..CRLF {
        let r = exchange(&sock, to, CRLF_PING, ANSWER_WAIT);
        assert_eq!(r.map(|r| r.0), Some(CRLF_PONG.to_vec()), "ping {i}");
    }
    let raw = scrape(&lab);
    let after = parse(&raw);
    let series = r#"sipka_keepalives_total{path="xdp",kind="crlf",action="answered"}"#;
    assert_eq!(
        get(&after, series) - get(&before, series),
        f64::from(CRLF),
        "{raw}"
    );
    assert_eq!(get(&after, "sipka_peers"), 1.0);
    let info = format!(
        r#"sipka_build_info{{version="{}",xdp_mode="native",iface="{}"}}"#,
        env!("CARGO_PKG_VERSION"),
        lab.server_if
    );
    assert_eq!(get(&after, &info), 1.0);
    for absent in [
        "sipka_edge_",
        "sipka_pbx_",
        "sipka_dialogs",
        "sipka_connections",
        r#"path="edge""#,
    ] {
        assert!(!raw.contains(absent), "{absent} on an offload page:\n{raw}");
    }
    promtool_check(&raw);
}

/// Where the lab's Prometheus serves its web UI and API (server namespace).
const PROMETHEUS: &str = "198.18.0.1:9590";

/// Debian's `prometheus` server in the lab's server namespace, scraping
/// the daemon every second into a scratch TSDB; killed (through
/// `timeout`, which passes the signal on) and its files removed on drop,
/// whatever the test's outcome.
struct Prometheus {
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl Prometheus {
    fn start(lab: &Lab) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("{}-prometheus", lab.name));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: sip-ka\n    static_configs:\n      \
                 - targets: ['{METRICS}']\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = lab
            .server("timeout")
            .args(["-k", "2", "120", "prometheus"])
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={PROMETHEUS}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("prometheus (Debian package prometheus, `cargo xtask setup`): {e}")
            });
        Prometheus { child, dir }
    }

    /// Prometheus's own log, for failure messages.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// `GET path` on Prometheus's HTTP API from the server namespace
    /// (`query` URL-encoded by curl); None when it does not answer yet.
    fn get(&self, lab: &Lab, path: &str, query: Option<&str>) -> Option<serde_json::Value> {
        let mut curl = lab.server("curl");
        curl.args(["-sS", "--fail", "--max-time", "3"]);
        if let Some(q) = query {
            curl.args(["-G", "--data-urlencode"])
                .arg(format!("query={q}"));
        }
        let out = curl
            .arg(format!("http://{PROMETHEUS}{path}"))
            .output()
            .expect("curl");
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout)
            .ok()
            .or_else(|| Some(serde_json::Value::String(text(&out))))
    }

    /// The value of an instant query that must select one series; None
    /// while Prometheus has no sample for it.
    fn value(&self, lab: &Lab, query: &str) -> Option<f64> {
        let v = self.get(lab, "/api/v1/query", Some(query))?;
        assert_eq!(v["status"], "success", "query {query}: {v}");
        let result = v["data"]["result"].as_array()?;
        match result.as_slice() {
            [] => None,
            [one] => one["value"][1].as_str()?.parse().ok(),
            more => panic!("query {query} selects {} series: {v}", more.len()),
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Debian's Prometheus server scrapes the daemon (1 s interval) and its
/// HTTP API returns exactly the CRLF pings sent: 0 before, N after, and
/// the scrape target is reported healthy.
#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn prometheus_server_scrapes_the_daemon_and_its_api_returns_the_pings() {
    let mut lab = common::lab();
    common::start(&mut lab, &["--xdp-mode", "native", "--metrics", METRICS]);
    let prom = Prometheus::start(&lab);
    let series = r#"sipka_keepalives_total{job="sip-ka",path="xdp",kind="crlf",action="answered"}"#;

    // Ready, and a first scrape of the idle daemon stored: 0 pings.
    let mut seen = None;
    assert!(
        wait_until(Duration::from_secs(30), || {
            seen = prom.value(&lab, series);
            seen.is_some()
        }),
        "Prometheus never returned {series} (not ready, or no scrape):\n{}",
        prom.log()
    );
    assert_eq!(seen, Some(0.0), "{series} before any ping");

    const CRLF: u32 = 17;
    let sock = client_socket(&lab, SocketAddr::new(CLIENT_V4.into(), 0));
    let to = SocketAddr::new(SERVER_V4.into(), 5060);
    for i in 0..CRLF {
        let r = exchange(&sock, to, CRLF_PING, ANSWER_WAIT);
        assert_eq!(r.map(|r| r.0), Some(CRLF_PONG.to_vec()), "ping {i}");
    }
    // The next scrapes (every second) carry the pings; the value must
    // reach exactly CRLF and never pass it.
    assert!(
        wait_until(Duration::from_secs(10), || {
            seen = prom.value(&lab, series);
            assert!(
                seen.unwrap_or(0.0) <= f64::from(CRLF),
                "{series} = {seen:?} > {CRLF}"
            );
            seen == Some(f64::from(CRLF))
        }),
        "{series} through Prometheus: {seen:?}, want {CRLF}:\n{}",
        prom.log()
    );
    // Prometheus itself reports the target up, and a range function over
    // the stored samples sees the same increase.
    assert_eq!(
        prom.value(&lab, r#"up{job="sip-ka"}"#),
        Some(1.0),
        "scrape target not up"
    );
    let targets = prom
        .get(&lab, "/api/v1/targets", None)
        .expect("/api/v1/targets");
    let health = &targets["data"]["activeTargets"][0]["health"];
    assert_eq!(health, "up", "{targets}");
    let increase = prom
        .value(
            &lab,
            &format!("max_over_time({series}[1m]) - min_over_time({series}[1m])"),
        )
        .expect("max_over_time - min_over_time");
    assert_eq!(increase, f64::from(CRLF));
}
