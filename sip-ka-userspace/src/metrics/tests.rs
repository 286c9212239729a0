//! The page as a whole: families present or absent by mode, values,
//! the HTTP listener, and the dashboard's queries against a real scrape.

use std::{
    collections::BTreeSet,
    io::{Read as _, Write as _},
    net::TcpStream,
    sync::Arc,
    time::Duration,
};

use sip_ka_common::{
    counters::{sip_request_index, EDGE_BASE, NUM_COUNTERS},
    sip::Method,
    Config, Counter,
};

use super::{collect::FastPath, encode::encode, families, *};
use crate::{
    edge::{self, config::test_config, dialog::NoSink, Edge},
    responder::Shared,
};

/// STATS and PEERS as the tests want them.
struct Fake {
    totals: Vec<u64>,
    peers: u64,
}

impl FastPath for Fake {
    fn totals(&self) -> anyhow::Result<Vec<u64>> {
        Ok(self.totals.clone())
    }
    fn peers(&self) -> anyhow::Result<u64> {
        Ok(self.peers)
    }
}

/// Slot i holds 1000 + i, so every value on the page says where it came from.
fn fake() -> Box<Fake> {
    Box::new(Fake {
        totals: (0..NUM_COUNTERS as u64).map(|i| 1000 + i).collect(),
        peers: 3,
    })
}

fn build() -> BuildInfo {
    BuildInfo {
        version: "9.9.9".into(),
        xdp_mode: "native".into(),
        iface: "eth0".into(),
    }
}

fn test_edge() -> Arc<Edge> {
    let cfg = test_config(
        "198.18.0.1:5060".parse().unwrap(),
        "198.18.0.1:5080".parse().unwrap(),
    );
    Arc::new(Edge::new(cfg, Box::new(NoSink), None, 1_000))
}

fn page(src: &Sources) -> String {
    encode(&collect::gather(src).unwrap()).unwrap()
}

/// `name{labels} value` lines, comments left out.
fn samples(page: &str) -> Vec<(String, String)> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("sample line");
            (series.to_string(), value.to_string())
        })
        .collect()
}

fn value(page: &str, series: &str) -> Option<String> {
    samples(page)
        .into_iter()
        .find(|(s, _)| s == series)
        .map(|(_, v)| v)
}

/// Metric names of the samples on a page.
fn names(page: &str) -> BTreeSet<String> {
    samples(page)
        .into_iter()
        .map(|(s, _)| s.split('{').next().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn offload_page_has_every_fast_path_counter_and_no_edge_family() {
    let responder = Shared::new(Config::DEFAULT);
    responder.counters.bump(Counter::UserCrlfPongSent);
    let p = page(&Sources {
        fast_path: Some(fake()),
        responder: Some(responder),
        edge: None,
        shield: None,
        build: build(),
    });
    // One sample per STATS slot below the edge block, plus build info and peers.
    assert_eq!(samples(&p).len(), EDGE_BASE as usize + 2, "{p}");
    let slot = |c: Counter| (1000 + c as u32).to_string();
    assert_eq!(
        value(
            &p,
            r#"sipka_keepalives_total{path="xdp",kind="crlf",action="answered"}"#
        ),
        Some(slot(Counter::CrlfPongSent))
    );
    assert_eq!(
        value(
            &p,
            r#"sipka_xdp_packets_total{outcome="dropped",reason="rate_limit"}"#
        ),
        Some(slot(Counter::DropRateLimit))
    );
    let opt = sip_request_index(Method::Options as u32, true, false);
    assert_eq!(
        value(
            &p,
            r#"sipka_sip_requests_total{method="options",in_dialog="true",body="false"}"#
        ),
        Some((1000 + opt).to_string())
    );
    // The responder's own counters, not their (older) STATS copy.
    assert_eq!(
        value(
            &p,
            r#"sipka_keepalives_total{path="responder",kind="crlf",action="answered"}"#
        ),
        Some("1".into())
    );
    assert_eq!(value(&p, "sipka_peers"), Some("3.0".into()));
    assert_eq!(
        value(
            &p,
            r#"sipka_build_info{version="9.9.9",xdp_mode="native",iface="eth0"}"#
        ),
        Some("1".into())
    );
    for absent in [
        "sipka_edge_",
        "sipka_pbx_",
        "sipka_dialogs",
        "sipka_connections",
    ] {
        assert!(!p.contains(absent), "{absent} in an offload page:\n{p}");
    }
    assert!(p.contains("# TYPE sipka_keepalives_total counter\n"), "{p}");
}

#[test]
fn edge_page_has_the_edge_counters_and_gauges() {
    let e = test_edge();
    edge::Counters::bump(&e.counters.sessions_expired);
    edge::Counters::bump(&e.counters.options_pbx_up);
    edge::Counters::bump(&e.counters.options_pbx_up);
    let src = Sources {
        fast_path: None,
        responder: None,
        edge: Some(e.clone()),
        shield: None,
        build: build(),
    };
    let p = page(&src);
    assert_eq!(
        value(&p, "sipka_edge_sessions_expired_total"),
        Some("1".into())
    );
    assert_eq!(
        value(
            &p,
            r#"sipka_keepalives_total{path="edge",kind="options_pbx",action="answered"}"#
        ),
        Some("2".into())
    );
    assert_eq!(value(&p, "sipka_pbx_up"), Some("0.0".into()), "{p}");
    // Unknown while the PBX has not answered: absent, not 0.
    assert!(!p.contains("sipka_pbx_rtt_seconds"), "{p}");
    assert_eq!(value(&p, "sipka_dialogs"), Some("0.0".into()));
    for t in ["tcp", "tls", "ws", "wss", "handshake"] {
        let s = format!(r#"sipka_connections{{transport="{t}"}}"#);
        assert_eq!(value(&p, &s), Some("0.0".into()), "{s}");
    }
    e.health.answered(
        "198.18.0.1:5080".parse().unwrap(),
        Duration::from_micros(831),
    );
    let p = page(&src);
    assert_eq!(value(&p, "sipka_pbx_up"), Some("1.0".into()));
    assert_eq!(
        value(&p, "sipka_pbx_rtt_seconds"),
        Some("0.000831".into()),
        "{p}"
    );
    // Every edge counter is on the page.
    let edge_samples = samples(&p)
        .into_iter()
        .filter(|(s, _)| s.starts_with("sipka_edge_") || s.contains(r#"path="edge""#))
        .count();
    assert_eq!(edge_samples, edge::Counters::NAMES.len(), "{p}");
}

#[test]
fn xdp_mode_labels() {
    assert_eq!(xdp_mode_label(None), "off");
    assert_eq!(xdp_mode_label(Some("attached in native mode")), "native");
    assert_eq!(xdp_mode_label(Some("attached in skb mode")), "skb");
    assert_eq!(
        xdp_mode_label(Some("replaced the program behind the existing pinned link")),
        "inherited"
    );
}

/// A GET over a plain TCP connection: status line and body.
fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
    (head.to_string(), body.to_string())
}

/// Every metric name in the dashboard's PromQL.
pub fn dashboard_metric_names() -> BTreeSet<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../packaging/grafana/sip-ka.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let json: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut exprs = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr" | "query", serde_json::Value::String(s)) => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(&json, &mut exprs);
    assert!(
        exprs.len() >= 6,
        "the dashboard has {} queries",
        exprs.len()
    );
    let mut names = BTreeSet::new();
    for e in &exprs {
        let mut rest = e.as_str();
        while let Some(at) = rest.find("sipka_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    assert!(!names.is_empty());
    names
}

#[test]
fn dashboard_queries_only_what_a_scrape_shows() {
    let e = test_edge();
    e.health
        .answered("198.18.0.1:5080".parse().unwrap(), Duration::from_millis(1));
    let src = Arc::new(Sources {
        fast_path: Some(fake()),
        responder: Some(Shared::new(Config::DEFAULT)),
        edge: Some(e),
        shield: Some(crate::shield::Shield::new(
            crate::shield::Policy::default(),
            Vec::new(),
        )),
        build: build(),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let addr = rt
        .block_on(start("127.0.0.1:0".parse().unwrap(), src))
        .unwrap();
    let (head, body) = http_get(addr, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let (head404, _) = http_get(addr, "/");
    assert!(head404.starts_with("HTTP/1.1 404"), "{head404}");
    let exposed = names(&body);
    let missing: Vec<_> = dashboard_metric_names()
        .into_iter()
        .filter(|n| !exposed.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries {missing:?}, not on the page:\n{body}"
    );
    // Every declared family shows up on a full edge-mode page.
    for f in families::ALL {
        assert!(
            exposed.contains(&f.exposed()),
            "{} not on the page",
            f.exposed()
        );
    }
}
