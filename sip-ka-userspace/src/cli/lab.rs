//! `sip-ka lab`: a self-contained demonstration in network namespaces.
//! It builds a lab (a server namespace where sip-ka runs on one end of a
//! veth pair, a client namespace on the other end), starts the daemon,
//! sends CRLF, STUN and SIP traffic from real clients, checks the answers,
//! prints the counters and the peers table; then runs sip-ka as an edge
//! proxy in front of a PBX (sipp) with phones (sipp) calling through it
//! over UDP and TCP, and tears everything down.

use std::{
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    path::Path,
    process::{Command, Output, Stdio},
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Args;
use tokio::signal::unix::SignalKind;

use crate::{
    cli::args::XdpModeArg,
    lab::{self, Lab, CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6},
};

#[derive(Args, Debug)]
pub struct LabArgs {
    /// XDP attach mode of the daemon in the lab: native with a fallback to
    /// SKB mode (auto), or only one of them.
    #[arg(long, value_enum, default_value = "auto")]
    pub xdp_mode: XdpModeArg,
    /// Leave the lab up after the traffic and print how to poke at it;
    /// it is torn down on Ctrl-C (SIGINT) or SIGTERM.
    #[arg(long)]
    pub keep: bool,
}

const SIP_PORT: u16 = 5060;

pub fn lab(args: LabArgs) -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("sip-ka lab needs root (network namespaces, XDP, bpffs)");
    }
    let missing = lab::missing_tools();
    if !missing.is_empty() {
        bail!(
            "missing tools: {}; install them with `cargo xtask setup` or apt-get",
            missing.join(", ")
        );
    }

    step("building the lab: two network namespaces joined by a veth pair");
    let mut lab = Lab::new()?;
    println!(
        "    server ns {} ({} = {SERVER_V4}, {SERVER_V6}), client ns {} ({} = {CLIENT_V4}, {CLIENT_V6})",
        lab.server_ns, lab.server_if, lab.client_ns, lab.client_if
    );
    // A client whose request nothing answers (sipsak's OPTIONS: no PBX
    // here) then hears so at once from an ICMP error, every time.
    for key in ["net.ipv4.icmp_ratelimit=0", "net.ipv6.icmp.ratelimit=0"] {
        lab::run(lab.server("sysctl").args(["-q", "-w", key]))?;
    }

    let mode = match args.xdp_mode {
        XdpModeArg::Auto => "auto",
        XdpModeArg::Native => "native",
        XdpModeArg::Skb => "skb",
    };
    step(&format!(
        "starting `sip-ka run --mode offload --xdp-mode {mode}` on {}",
        lab.server_if
    ));
    lab.start_daemon(&["--mode", "offload", "--xdp-mode", mode])?;
    println!(
        "    XDP program attached: {} mode",
        lab::attached_mode(&lab)?
    );

    let scratch = std::env::temp_dir().join(format!("{}-lab", lab.name));
    let result = traffic(&lab, &scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    result?;

    step("sip-ka stats (non-zero counters)");
    let out = lab::run(&mut lab.sip_ka(&["stats"])?)?;
    print_indented(&out.stdout);
    step("sip-ka peers");
    let out = lab::run(&mut lab.sip_ka(&["peers"])?)?;
    print_indented(&out.stdout);

    let result = edge(&mut lab, mode, &scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    result?;

    if args.keep {
        keep_up(&lab)?;
    }
    step("tearing the lab down");
    if lab.daemon_pid().is_some() {
        let status = lab.stop_daemon()?;
        if !status.success() {
            bail!("sip-ka run exited with {status} on SIGTERM");
        }
    }
    drop(lab);
    println!("done: every keep-alive was answered and counted");
    Ok(())
}

/// The traffic of the demonstration, each step checked.
fn traffic(lab: &Lab, scratch: &Path) -> Result<()> {
    let server4 = SocketAddr::new(SERVER_V4.into(), SIP_PORT);
    let server6 = SocketAddr::new(SERVER_V6.into(), SIP_PORT);

    step("CRLF keep-alives: a UDP socket sends \\r\\n\\r\\n (RFC 5626 4.4.1)");
    for (bind, to, count) in [
        (SocketAddr::new(CLIENT_V4.into(), 0), server4, 3),
        (SocketAddr::new(CLIENT_V6.into(), 0), server6, 2),
    ] {
        let sock = client_socket(lab, bind)?;
        let me = sock.local_addr()?;
        for _ in 0..count {
            match exchange(&sock, to, b"\r\n\r\n")? {
                Some((reply, from)) if reply == b"\r\n" && from == to => {}
                Some((reply, from)) => {
                    bail!("CRLF ping from {me}: unexpected answer {reply:02x?} from {from}")
                }
                None => bail!("CRLF ping from {me} to {to}: no pong within 2 s"),
            }
        }
        println!("    {me} -> {to}: {count} pings, {count} pongs (\\r\\n)");
    }

    step("STUN: coturn's turnutils_stunclient (RFC 5389 Binding)");
    for server in [SERVER_V4.to_string(), SERVER_V6.to_string()] {
        let out = client_run(
            lab,
            None,
            10,
            "turnutils_stunclient",
            &["-p", &SIP_PORT.to_string(), &server],
        )?;
        let t = text(&out);
        let mapped = crate::lab::addr_after(&t, "UDP reflexive addr: ").ok_or_else(|| {
            anyhow!("turnutils_stunclient -p {SIP_PORT} {server}: no answer: {t}")
        })?;
        println!("    turnutils_stunclient -p {SIP_PORT} {server}: reflexive address {mapped}");
    }

    step("STUN: the classic client `stun` (RFC 3489), test 1");
    let out = client_run(
        lab,
        None,
        10,
        "stun",
        &[&server4.to_string(), "1", "-v", "-p", "40000"],
    )?;
    let t = text(&out);
    let mapped = crate::lab::addr_after(&t, "MappedAddress = ")
        .ok_or_else(|| anyhow!("stun {server4} 1: no mapped address: {t}"))?;
    println!("    stun {server4} 1 -p 40000: MAPPED-ADDRESS {mapped}");

    step("SIP: sipsak OPTIONS (counted by the fast path; no PBX answers here)");
    let before = lab.counters()?;
    let out = client_run(
        lab,
        None,
        10,
        "sipsak",
        &["-s", &format!("sip:{SERVER_V4}"), "--timer-t1=100"],
    )?;
    if out.status.code() == Some(124) {
        bail!("sipsak timed out: {}", text(&out));
    }
    let counted = grew(
        &before,
        &lab.counters()?,
        "req_options_out_of_dialog_no_body",
    );
    if counted == 0 {
        bail!("sipsak's OPTIONS was not counted: {}", text(&out));
    }
    println!("    sipsak -s sip:{SERVER_V4}: {counted} OPTIONS counted out of dialog, no body");

    step("SIP: sipp sends an OPTIONS and an in-dialog INFO without a body");
    std::fs::create_dir_all(scratch)?;
    std::fs::write(scratch.join("ka.xml"), crate::lab::SIPP_KEEPALIVE_SCENARIO)?;
    let before = lab.counters()?;
    let out = client_run(
        lab,
        Some(scratch),
        15,
        "sipp",
        &[
            "-sf",
            "ka.xml",
            "-m",
            "1",
            "-nostdin",
            "-i",
            &CLIENT_V4.to_string(),
            "-p",
            "45060",
            "-timeout",
            "10s",
            &server4.to_string(),
        ],
    )?;
    if !out.status.success() {
        bail!("sipp failed ({}): {}", out.status, text(&out));
    }
    let after = lab.counters()?;
    let info = grew(&before, &after, "req_info_in_dialog_no_body");
    if info == 0 {
        bail!("sipp's INFO was not counted");
    }
    println!(
        "    sipp: OPTIONS +{}, INFO in dialog +{info}, keep-alives for unknown dialogs +{}",
        grew(&before, &after, "req_options_out_of_dialog_no_body"),
        grew(&before, &after, "ka_unknown_dialog")
    );
    Ok(())
}

/// Where the PBX listens in the edge part (behind the edge, same host).
const PBX_PORT: u16 = 5080;
/// Calls per transport in the edge part.
const EDGE_CALLS: u32 = 20;

/// The edge part: sip-ka restarted in edge mode on the same interface,
/// sipp as the PBX behind it, sipp phones calling through it over UDP and
/// over TCP with in-dialog keep-alives the edge answers, a CRLF ping on a
/// TCP connection, and the dialogs table empty at the end.
fn edge(lab: &mut Lab, mode: &str, scratch: &Path) -> Result<()> {
    let edge_addr = SocketAddr::new(SERVER_V4.into(), SIP_PORT);
    let pbx_addr = SocketAddr::new(SERVER_V4.into(), PBX_PORT);
    step(&format!(
        "edge mode: `sip-ka run --mode edge --listen {edge_addr} --upstream {pbx_addr}`, \
         sipp as the PBX on {pbx_addr}"
    ));
    let status = lab.stop_daemon()?;
    if !status.success() {
        bail!("sip-ka run (offload) exited with {status} on SIGTERM");
    }
    let (edge_s, pbx_s) = (edge_addr.to_string(), pbx_addr.to_string());
    lab.start_daemon(&[
        "--mode",
        "edge",
        "--xdp-mode",
        mode,
        "--listen",
        &edge_s,
        "--upstream",
        &pbx_s,
        "--qualify-frequency",
        "1",
    ])?;
    std::fs::create_dir_all(scratch)?;
    std::fs::write(scratch.join("pbx.xml"), lab::EDGE_PBX_SCENARIO)?;
    let methods = ["INFO", "INFO", "OPTIONS"];
    std::fs::write(scratch.join("ua.xml"), lab::edge_ua_scenario(&methods, 200))?;
    let mut pbx = lab
        .server("timeout")
        .current_dir(scratch)
        .args(["-k", "2", "60", "sipp", "-sf", "pbx.xml", "-nostdin", "-i"])
        .arg(SERVER_V4.to_string())
        .args(["-p", &PBX_PORT.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting sipp as the PBX")?;
    let calls = edge_calls(lab, scratch, &edge_s, methods.len());
    // SIGTERM to `timeout` reaches sipp; its exit status says whether any
    // call failed on the PBX side (an in-dialog keep-alive reaching it).
    unsafe { libc::kill(pbx.id() as i32, libc::SIGTERM) };
    let pbx_status = pbx.wait().context("waiting for the PBX")?;
    calls?;
    if !pbx_status.success() {
        bail!("the PBX (sipp) saw a failed call ({pbx_status}): a keep-alive reached it?");
    }
    println!("    the PBX saw every call and none of the keep-alives");

    step("sip-ka dialogs (the calls are over: none left)");
    let out = lab::run(&mut lab.sip_ka(&["dialogs"])?)?;
    print_indented(&out.stdout);
    step("sip-ka stats: the edge's counters");
    let out = lab::run(&mut lab.sip_ka(&["stats"])?)?;
    let edge_lines: Vec<&str> = std::str::from_utf8(&out.stdout)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.trim_start().starts_with("edge_"))
        .collect();
    print_indented(edge_lines.join("\n").as_bytes());
    Ok(())
}

/// The phones' part of [`edge`]: calls over UDP then TCP, then a CRLF
/// ping on a TCP connection.
fn edge_calls(lab: &Lab, scratch: &Path, edge: &str, keepalives: usize) -> Result<()> {
    for (transport, flag) in [("UDP", "u1"), ("TCP", "t1")] {
        let before = lab.counters()?;
        let out = client_run(
            lab,
            Some(scratch),
            30,
            "sipp",
            &[
                "-sf",
                "ua.xml",
                "-t",
                flag,
                "-m",
                &EDGE_CALLS.to_string(),
                "-r",
                "20",
                "-l",
                "10",
                "-s",
                "service",
                "-nostdin",
                "-i",
                &CLIENT_V4.to_string(),
                "-p",
                "5062",
                "-timeout",
                "25s",
                edge,
            ],
        )?;
        if !out.status.success() {
            bail!(
                "sipp (phones over {transport}) failed ({}): {}",
                out.status,
                text(&out)
            );
        }
        // The edge publishes its counters every 500 ms.
        let want = u64::from(EDGE_CALLS) * keepalives as u64;
        let mut after = lab.counters()?;
        for _ in 0..20 {
            if grew(&before, &after, "edge_ka_in_dialog_ok") >= want {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            after = lab.counters()?;
        }
        let answered = grew(&before, &after, "edge_ka_in_dialog_ok");
        let xdp = grew(&before, &after, "ka_in_dialog");
        if answered < want {
            bail!(
                "over {transport}: the edge answered {answered} in-dialog keep-alives, want {want}"
            );
        }
        println!(
            "    {EDGE_CALLS} calls over {transport} through the edge, each with \
             {keepalives} in-dialog keep-alives: {answered} answered by the edge, \
             {xdp} counted by XDP"
        );
    }
    step("CRLF keep-alive on a TCP connection to the edge (RFC 5626 4.4.1)");
    let ns = format!("/run/netns/{}", lab.client_ns);
    let to: SocketAddr = edge.parse()?;
    let pong = std::thread::spawn(move || -> Result<Vec<u8>> {
        use std::io::{Read as _, Write as _};
        let f = std::fs::File::open(&ns).with_context(|| format!("opening {ns}"))?;
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns({ns}): {}", std::io::Error::last_os_error());
        }
        let mut s = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"\r\n\r\n")?;
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf)?;
        Ok(buf.get(..n).unwrap_or_default().to_vec())
    })
    .join()
    .map_err(|_| anyhow!("the TCP client thread panicked"))??;
    if pong != b"\r\n" {
        bail!("TCP CRLF ping to {to}: got {pong:02x?}, want 0d 0a");
    }
    println!("    {to} over TCP: \\r\\n\\r\\n -> \\r\\n");
    Ok(())
}

/// Prints how to use the lab, then waits for SIGINT or SIGTERM.
fn keep_up(lab: &Lab) -> Result<()> {
    let exe = lab::sip_ka_exe()?;
    let pins = lab.pin_dir.display();
    step("the lab stays up; from another shell:");
    println!(
        "    sudo {} stats --watch 1 --pin-dir {pins}",
        exe.display()
    );
    println!("    sudo {} peers --pin-dir {pins}", exe.display());
    println!(
        "    sudo {} config --pin-dir {pins} set udp_crlf drop",
        exe.display()
    );
    println!(
        "    sudo nsenter --net=/run/netns/{} -- turnutils_stunclient -p {SIP_PORT} {SERVER_V4}",
        lab.client_ns
    );
    println!(
        "    sudo nsenter --net=/run/netns/{} -- sipsak -s sip:{SERVER_V4}",
        lab.client_ns
    );
    println!(
        "    sudo nsenter --net=/run/netns/{} -- python3 -c \"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2); s.sendto(b'\\r\\n\\r\\n', ('{SERVER_V4}', {SIP_PORT})); print(s.recvfrom(64))\"",
        lab.client_ns
    );
    println!(
        "    sudo ip netns exec {} tcpdump -ni {} udp port {SIP_PORT}",
        lab.client_ns, lab.client_if
    );
    if let Some(pid) = lab.daemon_pid() {
        println!("    (sip-ka run is process {pid})");
    }
    println!("press Ctrl-C to tear the lab down");
    use std::io::Write as _;
    std::io::stdout().flush().ok();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
        anyhow::Ok(())
    })?;
    println!();
    Ok(())
}

fn step(what: &str) {
    println!("==> {what}");
}

fn print_indented(bytes: &[u8]) {
    for line in String::from_utf8_lossy(bytes).lines() {
        println!("    {line}");
    }
}

/// Runs `program args...` in the client namespace under `timeout`.
fn client_run(
    lab: &Lab,
    dir: Option<&Path>,
    secs: u32,
    program: &str,
    args: &[&str],
) -> Result<Output> {
    let mut cmd: Command = lab.client("timeout");
    cmd.args(["-k", "2", &secs.to_string(), program])
        .args(args)
        .stdin(Stdio::null());
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    cmd.output()
        .with_context(|| format!("running {program} in {}", lab.client_ns))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .trim()
    .to_string()
}

fn grew(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
    name: &str,
) -> u64 {
    after
        .get(name)
        .copied()
        .unwrap_or(0)
        .saturating_sub(before.get(name).copied().unwrap_or(0))
}

/// A UDP socket in the lab's client namespace: made by a thread that
/// joined the namespace (a socket keeps the namespace it was made in).
fn client_socket(lab: &Lab, bind: SocketAddr) -> Result<UdpSocket> {
    let ns = format!("/run/netns/{}", lab.client_ns);
    std::thread::spawn(move || -> Result<UdpSocket> {
        let f = std::fs::File::open(&ns).with_context(|| format!("opening {ns}"))?;
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns({ns}): {}", std::io::Error::last_os_error());
        }
        let s = UdpSocket::bind(bind).with_context(|| format!("binding {bind}"))?;
        s.set_read_timeout(Some(Duration::from_millis(200)))?;
        Ok(s)
    })
    .join()
    .map_err(|_| anyhow!("client socket thread panicked"))?
}

/// Sends `payload` to `to`; the first datagram back within 2 s, if any.
fn exchange(
    sock: &UdpSocket,
    to: SocketAddr,
    payload: &[u8],
) -> Result<Option<(Vec<u8>, SocketAddr)>> {
    sock.send_to(payload, to)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut buf = [0u8; 2048];
    for _ in 0..100 {
        if std::time::Instant::now() >= deadline {
            break;
        }
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => return Ok(Some((buf[..n].to_vec(), from))),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::ConnectionRefused
                ) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}
