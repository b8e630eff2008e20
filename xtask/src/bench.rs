//! `cargo xtask bench gateway`: fixed-rate load through the gateway and directly to a zero-delay
//! upstream in the same run, for both durability modes, plus this disk's fsync latency.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::run;

pub fn run_bench(root: &Path, args: &[String]) -> Result<()> {
    let duration = args
        .windows(2)
        .find(|w| w[0] == "--duration")
        .and_then(|w| w[1].parse::<u64>().ok())
        .unwrap_or(10);
    ensure_hey()?;
    run(Command::new("cargo").args([
        "build",
        "--release",
        "-p",
        "keel",
        "-p",
        "keel-testkit",
        "--bin",
        "keel",
        "--bin",
        "mock-upstream",
    ]))?;
    let bin = root.join("target/release");
    let work = root.join("target/bench-gateway");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;

    let (fsync_p50, fsync_p99) = fsync_latency(&work, 2000)?;
    eprintln!("fsync: p50 {:.3} ms, p99 {:.3} ms", fsync_p50, fsync_p99);

    let mut mock = Command::new(bin.join("mock-upstream"))
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting mock-upstream")?;
    let mock_url = first_line(&mut mock)?;
    let body =
        r#"{"model":"bench","messages":[{"role":"user","content":"hello there, how are you?"}]}"#;
    let mut rows = Vec::new();
    for durability in ["durable", "async"] {
        let dir = work.join(durability);
        std::fs::create_dir_all(&dir)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let cfg = dir.join("keel.toml");
        std::fs::write(
            &cfg,
            format!(
                "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{d}\"\n[storage]\ndurability = \"{durability}\"\n[[upstreams]]\nname = \"mock\"\nbase_url = \"{mock_url}\"\n[log]\nformat = \"text\"\n",
                d = dir.display()
            ),
        )?;
        let out = Command::new(bin.join("keel"))
            .args([
                "keys", "create", "--tenant", "bench", "--role", "app", "--config",
            ])
            .arg(&cfg)
            .output()?;
        let key = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let mut server = Command::new(bin.join("keel"))
            .args(["serve", "--config"])
            .arg(&cfg)
            .env("KEEL_LOG", "warn")
            .spawn()?;
        wait_healthy(port)?;
        for rate in [500u32, 2000] {
            let direct = hey(
                &format!("{mock_url}/chat/completions"),
                None,
                body,
                rate,
                duration,
            )?;
            let gw = hey(
                &format!("http://127.0.0.1:{port}/v1/chat/completions"),
                Some(&key),
                body,
                rate,
                duration,
            )?;
            eprintln!("{durability} @ {rate}/s: direct {direct:?} gateway {gw:?}");
            rows.push((durability, rate, direct, gw));
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(server.id().to_string())
            .status();
        let _ = server.wait();
    }
    let _ = mock.kill();
    let _ = mock.wait();

    let mut out = String::new();
    out.push_str(&format!(
        "fsync on this disk (4 KiB write + fdatasync, 2000 samples): p50 {fsync_p50:.3} ms, p99 {fsync_p99:.3} ms\n\n"
    ));
    out.push_str("| durability | target req/s | achieved req/s (gateway) | direct p50 / p99 ms | gateway p50 / p99 ms | added p50 / p99 ms | errors |\n|---|---|---|---|---|---|---|\n");
    for (d, rate, direct, gw) in &rows {
        out.push_str(&format!(
            "| {d} | {rate} | {:.0} | {:.3} / {:.3} | {:.3} / {:.3} | {:.3} / {:.3} | {} |\n",
            gw.rps,
            direct.p50,
            direct.p99,
            gw.p50,
            gw.p99,
            gw.p50 - direct.p50,
            gw.p99 - direct.p99,
            gw.errors
        ));
    }
    println!("{out}");
    std::fs::write(work.join("results.md"), &out)?;
    Ok(())
}

pub fn dispatch(root: &Path, args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("gateway") => run_bench(root, &args[1..]),
        Some("drift") => {
            // Side by side with River 0.26.1 (installed into a venv by the script).
            run(Command::new("cargo").args(["build", "--release", "--bin", "keel"]))?;
            let keel = root.join("target/release/keel");
            run(Command::new("python3")
                .arg(root.join("crates/keel-drift/bench/compare_river.py"))
                .args([
                    "--venv",
                    "target/river-venv",
                    "--workdir",
                    "target/bench-drift",
                ])
                .arg("--keel-cmd")
                .arg(format!("{} drift replay", keel.display()))
                .args(&args[1..]))
        }
        _ => bail!("usage: cargo xtask bench gateway [--duration SECS] | bench drift"),
    }
}

fn ensure_hey() -> Result<()> {
    if Command::new("hey").arg("-h").output().is_ok() {
        return Ok(());
    }
    run(Command::new("apt-get").arg("update"))?;
    run(Command::new("apt-get").args(["install", "-y", "hey"]))
}

fn first_line(child: &mut Child) -> Result<String> {
    let out = child.stdout.take().context("no stdout")?;
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line)?;
    Ok(line.trim().to_string())
}

fn wait_healthy(port: u16) -> Result<()> {
    for _ in 0..200 {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
            let mut buf = String::new();
            let _ = std::io::Read::read_to_string(&mut s, &mut buf);
            if buf.starts_with("HTTP/1.1 200") {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("gateway on port {port} never became healthy")
}

#[derive(Debug)]
struct Load {
    rps: f64,
    p50: f64,
    p99: f64,
    errors: u64,
}

fn hey(url: &str, key: Option<&str>, body: &str, rate: u32, secs: u64) -> Result<Load> {
    let workers = 50u32;
    let mut cmd = Command::new("hey");
    cmd.args(["-z", &format!("{secs}s"), "-c", &workers.to_string(), "-q"])
        .arg(format!("{}", rate.div_ceil(workers)))
        .args(["-m", "POST", "-T", "application/json", "-d", body]);
    if let Some(k) = key {
        cmd.args(["-H", &format!("Authorization: Bearer {k}")]);
    }
    cmd.arg(url);
    let t = Instant::now();
    let out = cmd.output().context("running hey")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let num_after = |needle: &str| -> Option<f64> {
        let line = text.lines().find(|l| l.contains(needle))?;
        let rest = &line[line.find(needle)? + needle.len()..];
        rest.split_whitespace().next()?.parse().ok()
    };
    let rps = num_after("Requests/sec:").context("hey printed no Requests/sec")?;
    let p50 = num_after("50% in").context("no p50")? * 1000.0;
    let p99 = num_after("99% in").context("no p99")? * 1000.0;
    let ok: u64 = text
        .lines()
        .find(|l| l.trim_start().starts_with("[200]"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let total = (rps * t.elapsed().as_secs_f64().min(secs as f64)) as u64;
    Ok(Load {
        rps,
        p50,
        p99,
        errors: total.saturating_sub(ok),
    })
}

/// Measures write + fdatasync latency in `dir`, like a WAL commit.
fn fsync_latency(dir: &Path, n: usize) -> Result<(f64, f64)> {
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path)?;
    let block = vec![7u8; 4096];
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f.write_all(&block)?;
        f.sync_data()?;
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let _ = std::fs::remove_file(&path);
    samples.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    Ok((pct(0.5), pct(0.99)))
}
