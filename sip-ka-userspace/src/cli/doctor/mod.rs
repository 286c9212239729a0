//! `sip-ka doctor`: what an operator runs before `sip-ka run`. Each check
//! says `ok`, `warn` or `fail`, what it found, and for a warning or a
//! failure the fix in one line; the exit status is 1 when a check fails
//! (warnings allowed). It changes nothing: the ports are bound and
//! released, the state directory gets a probe made and removed at once.
//!
//! The settings come from the flags and, with `--config`, from the file
//! as `run` merges them (a flag overrides the file).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::{bail, Result};
use clap::Args;

mod host;
mod net;
mod remote;
mod report;

use report::{Check, Status};

use super::{
    run_args::{self, Mode, RunArgs},
    settings::Raw,
};
use crate::{bpf::load::DEFAULT_PIN_DIR, edge::persist::default_state_dir};

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// The interface the phones' traffic arrives on (`run --iface`): that
    /// it exists, whether its driver runs XDP natively, its MTU and
    /// queues, and its rp_filter and accept_local.
    #[arg(long)]
    pub iface: Option<String>,
    /// The PBX (`run --upstream`, edge mode): which interface reaches it
    /// (refused on the phones' side, as `run` refuses it), and whether it
    /// answers an OPTIONS within a second.
    #[arg(long, value_name = "ADDR")]
    pub upstream: Option<SocketAddr>,
    /// A PBX reached through --iface is behind a firewall that drops its
    /// address arriving there (`run --trust-upstream-source`): a warning,
    /// not a failure.
    #[arg(long)]
    pub trust_upstream_source: bool,
    /// The configuration file `run` will read (`run --config`): it must
    /// pass `sip-ka config check`, and it gives every setting not given
    /// here as a flag.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where the daemon will listen for SIP (`run --listen`, repeatable):
    /// each address is bound on UDP (and TCP in edge mode) and released.
    /// An address this host does not have (an HA pair's VIP) needs
    /// ip_nonlocal_bind. Default: UDP 0.0.0.0:5060.
    #[arg(long = "listen", value_name = "ADDR")]
    pub listen: Vec<SocketAddr>,
    /// The HA pair's Redis (`run --state-store`, `redis://HOST:PORT/DB`):
    /// connected to and sent a PING.
    #[arg(long, value_name = "URL")]
    pub state_store: Option<String>,
    /// Where `run` will pin the maps and the link (`run --pin-dir`): it
    /// must be on a bpffs. Default: the file's, else /sys/fs/bpf/sip-ka.
    #[arg(long, value_name = "DIR")]
    pub pin_dir: Option<PathBuf>,
    /// The edge's state directory (`run --state-dir`), which must be
    /// writable. Default: the file's, else /run/sip-ka/<name of the pin
    /// directory>, as `run` computes it.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Print one JSON object: every check (name, status, finding, fix)
    /// and how many ended ok, warn and fail.
    #[arg(long)]
    pub json: bool,
}

/// What the checks look at: the flags, merged over the file's settings.
#[derive(Debug)]
struct Plan {
    iface: Option<String>,
    upstream: Option<SocketAddr>,
    trust: bool,
    listen: Vec<SocketAddr>,
    state_store: Option<String>,
    pin_dir: PathBuf,
    state_dir: PathBuf,
    edge: bool,
    /// `xdp_mode = "native"`: no fallback to SKB mode.
    native_only: bool,
}

impl Plan {
    fn from_flags(a: &DoctorArgs) -> Plan {
        let pin_dir = a
            .pin_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PIN_DIR));
        Plan {
            iface: a.iface.clone(),
            upstream: a.upstream,
            trust: a.trust_upstream_source,
            listen: a.listen.clone(),
            state_store: a.state_store.clone(),
            state_dir: a
                .state_dir
                .clone()
                .unwrap_or_else(|| default_state_dir(&pin_dir)),
            pin_dir,
            edge: a.upstream.is_some(),
            native_only: false,
        }
    }

    fn from_run(r: RunArgs) -> Plan {
        let pin_dir = r.pin.pin_dir;
        Plan {
            iface: r.iface,
            upstream: r.upstream,
            trust: r.trust_upstream_source,
            listen: r.listen,
            state_store: r.state_store,
            state_dir: r.state_dir.unwrap_or_else(|| default_state_dir(&pin_dir)),
            pin_dir,
            edge: r.mode == Mode::Edge,
            native_only: r.xdp_mode == super::args::XdpModeArg::Native,
        }
    }
}

/// The doctor's flags as `run`'s typed flags, to lay over the file.
fn as_run_flags(a: &DoctorArgs) -> BTreeMap<String, Raw> {
    let mut flags = BTreeMap::new();
    let mut one = |key: &str, v: Option<String>| {
        if let Some(v) = v {
            flags.insert(key.to_string(), Raw::Values(vec![v]));
        }
    };
    one("iface", a.iface.clone());
    one("upstream", a.upstream.map(|u| u.to_string()));
    one("state_store", a.state_store.clone());
    one(
        "pin_dir",
        a.pin_dir.as_ref().map(|p| p.display().to_string()),
    );
    one(
        "state_dir",
        a.state_dir.as_ref().map(|p| p.display().to_string()),
    );
    if !a.listen.is_empty() {
        let listen = a.listen.iter().map(SocketAddr::to_string).collect();
        flags.insert("listen".to_string(), Raw::Values(listen));
    }
    if a.trust_upstream_source {
        flags.insert("trust_upstream_source".to_string(), Raw::Flag(true));
    }
    flags
}

/// `sip-ka config check FILE` without its listing, with the doctor's
/// flags laid over the file as `run` lays its own.
fn config(file: &Path, a: &DoctorArgs) -> (Check, Option<RunArgs>) {
    let cmd = run_args::command();
    let fix = format!(
        "correct the file (`sip-ka config check {}` says the same, and lists every key)",
        file.display()
    );
    let resolved = run_args::read_file(&cmd, file).and_then(|values| {
        run_args::resolve(&cmd, &as_run_flags(a), &values, &Default::default())
            .map_err(|e| anyhow::anyhow!("config file {}: {e:#}", file.display()))
    });
    match resolved {
        Ok((run, _)) => {
            let mode = format!("{:?}", run.mode).to_lowercase();
            let iface = run
                .iface
                .as_deref()
                .map_or(String::new(), |i| format!(", iface {i}"));
            (
                Check::ok(
                    "config",
                    format!(
                        "{} passes `sip-ka config check` ({mode} mode{iface})",
                        file.display()
                    ),
                ),
                Some(run),
            )
        }
        Err(e) => {
            let e = format!("{e:#}");
            // One line: `file X:` runs into its first reason, the
            // reasons are separated by `;`.
            let mut one_line = String::new();
            for l in e.lines().map(str::trim).filter(|l| !l.is_empty()) {
                if !one_line.is_empty() {
                    one_line.push_str(if one_line.ends_with(':') { " " } else { "; " });
                }
                one_line.push_str(l);
            }
            (Check::fail("config", one_line, fix), None)
        }
    }
}

pub fn doctor(args: DoctorArgs) -> Result<()> {
    let mut checks = Vec::new();
    let plan = match &args.config {
        Some(file) => {
            let (check, run) = config(file, &args);
            checks.push(check);
            match run {
                Some(run) => Plan::from_run(run),
                None => Plan::from_flags(&args),
            }
        }
        None => Plan::from_flags(&args),
    };
    checks.extend(run_checks(&plan));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report::json(&checks))?);
    } else {
        print!("{}", report::text(&checks));
    }
    match report::count(&checks, Status::Fail) {
        0 => Ok(()),
        1 => bail!("1 check failed"),
        n => bail!("{n} checks failed"),
    }
}

/// Every check `plan` calls for, in the order an operator fixes them:
/// the host, the interface, the PBX, the ports, the store.
fn run_checks(plan: &Plan) -> Vec<Check> {
    let mut checks = vec![host::kernel(&host::kernel_release()), host::btf()];
    let caps = host::effective_caps();
    let caps_ok = caps.is_some_and(|c| host::missing_caps(c).is_empty());
    let can_mount = caps.is_some_and(|c| host::has_cap(c, host::CAP_SYS_ADMIN));
    checks.push(host::capabilities(caps));
    checks.push(host::bpffs(&plan.pin_dir, can_mount));
    // Reading pinned maps' layouts needs the capabilities: without them
    // the capability check has already failed.
    if caps_ok {
        checks.extend(host::pins(&plan.pin_dir));
    }
    checks.push(host::state_dirs(&plan.state_dir, &plan.pin_dir));

    let (upstream, pbx) = match plan.upstream {
        Some(u) => {
            let (check, pbx) = remote::upstream(u, plan.iface.as_deref(), plan.trust);
            (Some((u, check)), pbx)
        }
        None => (None, net::Pbx::None),
    };
    if let Some(iface) = &plan.iface {
        let link = net::Link::read(iface);
        let exists = net::interface(iface, &link);
        let missing = exists.status == Status::Fail;
        checks.push(exists);
        if !missing {
            checks.push(net::xdp_driver(iface, &link, plan.native_only));
            checks.push(net::mtu(iface, &link));
            checks.push(net::queues(iface, &link));
            checks.push(net::rp_filter(iface, &pbx, plan.trust));
            checks.push(net::accept_local(iface, &pbx, plan.trust));
        }
    }
    if let Some((u, check)) = upstream {
        checks.push(check);
        checks.push(remote::ping(u));
    }

    let (nonlocal, bindable) = net::nonlocal_bind(&plan.listen);
    checks.extend(nonlocal);
    if plan.listen.is_empty() {
        let default = SocketAddr::from(([0, 0, 0, 0], 5060));
        checks.push(net::port(default, false, true));
    }
    let host_addrs = crate::bpf::iface::host_addresses();
    let mut seen = Vec::new();
    for addr in &plan.listen {
        if seen.contains(addr) {
            continue;
        }
        seen.push(*addr);
        let ip = addr.ip();
        if !bindable && !ip.is_unspecified() && !ip.is_loopback() && !host_addrs.contains(&ip) {
            continue; // the nonlocal_bind check failed for it
        }
        checks.push(net::port(*addr, false, false));
        if plan.edge {
            checks.push(net::port(*addr, true, false));
        }
    }

    if let Some(url) = &plan.state_store {
        checks.push(remote::redis(url));
    }
    checks
}
