//! Benchmark of bulk email: 100,000 recipients through `Mailer::send_many` to a loopback SMTP
//! sink, against the sink's own maximum measured in the same run with a minimal pipelined
//! sender; prints messages/s, the sender's peak RSS and duplicates. See `run.sh`.
//!
//! One binary, several roles: with no role it orchestrates; `sink`, `raw`, `campaign` and `many` are the
//! child processes it starts, so that each one's memory and CPU are its own; `build` prints
//! what building one sample message with lettre costs.

mod raw;
mod sample;
mod sink;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// The allocator drbot's binary runs with, tuned as `drbot` tunes it (bot/src/alloc.rs), so
/// the senders' CPU and memory are the product's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // SAFETY: process-global mimalloc options, set before any other thread starts.
    // `mi_option_purge_delay` (15) = 0 and `mi_option_arena_eager_commit` (4) = 0, as drbot's.
    unsafe {
        libmimalloc_sys::mi_option_set(15, 0);
        libmimalloc_sys::mi_option_set(4, 0);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("sink") => sink::main(&args[1..]),
        Some("raw") => raw::main(&args[1..]),
        Some("campaign") => drbot_sender(true, &args[1..]),
        Some("many") => drbot_sender(false, &args[1..]),
        Some("build") => build_cost(args.get(1).map(String::as_str)),
        Some("show") => show(),
        _ => orchestrate(&args),
    }
}

/// `--messages N`, `--connections C` and `--rounds R` (cargo adds `--bench`, which is
/// ignored; `--data`, a flag, makes the sink leave CHUNKING out).
fn option(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} needs a number, got {v}"))
        })
        .unwrap_or(default)
}

struct Sink {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    port: u16,
}

impl Sink {
    fn start(data_only: bool) -> Sink {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .arg("sink")
            .args(data_only.then_some("data"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the sink");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .expect("sink prints its port")
            .parse()
            .unwrap();
        Sink {
            child,
            stdin,
            stdout,
            port,
        }
    }

    /// The sink's counters since the last call: (messages, unique ids, duplicates, seconds
    /// from the first MAIL to the last accepted message).
    fn take_stats(&mut self) -> (u64, u64, u64, f64) {
        writeln!(self.stdin, "stats").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let v: Vec<&str> = line.split_whitespace().collect();
        (
            v[0].parse().unwrap(),
            v[1].parse().unwrap(),
            v[2].parse().unwrap(),
            v[3].parse().unwrap(),
        )
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a sender role as a child and returns its `key value` output lines.
fn run_sender(role: &str, port: u16, messages: usize, connections: usize) -> Vec<(String, String)> {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            role,
            &port.to_string(),
            &messages.to_string(),
            &connections.to_string(),
        ])
        .stderr(Stdio::inherit())
        .output()
        .expect("run sender");
    assert!(out.status.success(), "{role} sender failed: {}", out.status);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            l.split_once(' ')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

fn get(out: &[(String, String)], key: &str) -> String {
    out.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

fn orchestrate(args: &[String]) {
    let messages = option(args, "--messages", 100_000);
    let connections = option(args, "--connections", 16);
    let data_only = args.iter().any(|a| a == "--data");
    let mut sink = Sink::start(data_only);
    println!("email bulk send benchmark: {messages} messages, {connections} connections");
    println!(
        "sink: single-threaded Rust tokio SMTP sink on 127.0.0.1:{} ({})",
        sink.port,
        if data_only {
            "PIPELINING"
        } else {
            "PIPELINING, CHUNKING"
        }
    );

    // Rounds of the three senders in turn; each sender's best round counts, the sink's
    // maximum included, since a single 0.1 s run moves with the machine's state.
    let rounds = option(args, "--rounds", 3).max(1);
    let senders = [
        ("raw", "minimal pipelined sender"),
        ("campaign", "drbot send_campaign"),
        ("many", "drbot send_many"),
    ];
    // Per sender: best rate, peak RSS (kB, highest), duplicates and missing (summed).
    let mut best = [(0f64, 0f64, 0u64, 0u64); 3];
    // The campaign's rate over the minimal sender's of the same round (run just before it).
    let mut round_ratios = Vec::new();
    for round in 1..=rounds {
        let mut raw_rate = 0f64;
        for (k, (role, what)) in senders.iter().enumerate() {
            let out = run_sender(role, sink.port, messages, connections);
            let (n, unique, dups, secs) = sink.take_stats();
            let rate = n as f64 / secs;
            let hwm_kb: f64 = get(&out, "vmhwm_kb").parse().unwrap_or(f64::NAN);
            println!(
                "round {round}: {what} ({}): sink got {n} ({unique} unique, {dups} duplicates) \
                 in {secs:.3} s = {rate:.0} msg/s; sender elapsed {} s, peak RSS {:.1} MB{}",
                if data_only { "data" } else { "bdat" },
                get(&out, "elapsed"),
                hwm_kb / 1024.0,
                if *role == "raw" {
                    String::new()
                } else {
                    format!(
                        ", delivered {}, failed {}",
                        get(&out, "ok"),
                        get(&out, "failed")
                    )
                }
            );
            match *role {
                "raw" => raw_rate = rate,
                "campaign" => round_ratios.push(rate / raw_rate),
                _ => {}
            }
            let b = &mut best[k];
            b.0 = b.0.max(rate);
            b.1 = b.1.max(hwm_kb);
            b.2 += dups;
            b.3 += messages as u64 - unique;
        }
    }
    let sink_max = best[0].0;
    println!("sink maximum (best minimal-sender round): {sink_max:.0} msg/s");
    for (k, (_, what)) in senders.iter().enumerate().skip(1) {
        println!(
            "{what}: best {:.0} msg/s = {:.1} % of the sink maximum, peak RSS {:.1} MB",
            best[k].0,
            best[k].0 / sink_max * 100.0,
            best[k].1 / 1024.0
        );
    }
    round_ratios.sort_by(f64::total_cmp);
    println!(
        "send_campaign / minimal sender of the same round: {} (median {:.1} %; for information, \
         the goal compares the best rounds)",
        round_ratios
            .iter()
            .map(|r| format!("{:.1} %", r * 100.0))
            .collect::<Vec<_>>()
            .join(", "),
        round_ratios[round_ratios.len() / 2] * 100.0
    );
    let (rate, hwm_kb, dups, missing) = best[1];
    let ratio = rate / sink_max;
    println!(
        "ratio send_campaign / sink maximum: {:.1} % (goal >= 80 %)",
        ratio * 100.0
    );
    println!("peak RSS {:.1} MB (goal < 100 MB)", hwm_kb / 1024.0);
    println!("duplicates {dups}, missing {missing} over {rounds} rounds (goal 0, 0)");
    let pass = ratio >= 0.8 && hwm_kb < 100.0 * 1024.0 && dups == 0 && missing == 0;
    println!("result: {}", if pass { "PASS" } else { "FAIL" });
}

/// `campaign PORT N C` sends the sample campaign to N recipients with `send_campaign`;
/// `many PORT N C` sends N generated emails with `send_many`; both over C connections.
fn drbot_sender(campaign: bool, args: &[String]) {
    use futures::StreamExt;
    let port: u16 = args[0].parse().unwrap();
    let messages: usize = args[1].parse().unwrap();
    let connections: usize = args[2].parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = notifier::email::SmtpUrl::parse(&format!("smtp://127.0.0.1:{port}")).unwrap();
        let mut config = notifier::email::EmailConfig::new(url, sample::FROM);
        config.max_connections = connections as u32;
        let mailer = notifier::email::Mailer::new(&config).unwrap();
        let start = std::time::Instant::now();
        let mut stream: std::pin::Pin<Box<dyn futures::Stream<Item = _> + Send>> = if campaign {
            let content = mailer.campaign(sample::campaign()).unwrap();
            let recipients = futures::stream::iter((0..messages).map(sample::recipient));
            Box::pin(
                mailer
                    .send_campaign(content, recipients, mailer.bulk_options())
                    .unwrap(),
            )
        } else {
            let emails = futures::stream::iter((0..messages).map(sample::email));
            Box::pin(mailer.send_many(emails, mailer.bulk_options()).unwrap())
        };
        let (mut ok, mut failed) = (0u64, 0u64);
        while let Some(d) = stream.next().await {
            match d.result {
                Ok(()) => ok += 1,
                Err(e) => {
                    failed += 1;
                    if failed <= 5 {
                        eprintln!("{}: {e}", d.message_id);
                    }
                }
            }
        }
        println!("elapsed {:.3}", start.elapsed().as_secs_f64());
        println!("ok {ok}");
        println!("failed {failed}");
    });
    println!("vmhwm_kb {}", vm_hwm_kb());
}

/// Peak resident set size of this process, from `/proc/self/status`.
pub fn vm_hwm_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A mailer for formatting only (its server is never contacted); call inside a runtime.
fn offline_mailer() -> notifier::email::Mailer {
    let url = notifier::email::SmtpUrl::parse("smtp://127.0.0.1:25").unwrap();
    notifier::email::Mailer::new(&notifier::email::EmailConfig::new(url, sample::FROM)).unwrap()
}

/// `build`: how long building one sample email takes, with lettre (`Mailer::format`) and as
/// `send_many` does (`Mailer::format_bulk`); `build lettre` or `build bulk` only one of them
/// (for profiling).
fn build_cost(only: Option<&str>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mailer = offline_mailer();
        let n = 20_000;
        for (name, bulk) in [
            ("lettre (format)", false),
            ("send_many (format_bulk)", true),
        ] {
            if only.is_some_and(|o| o != if bulk { "bulk" } else { "lettre" }) {
                continue;
            }
            let start = std::time::Instant::now();
            let mut bytes = 0;
            for i in 0..n {
                let email = sample::email(i);
                bytes += if bulk {
                    mailer.format_bulk(&email)
                } else {
                    mailer.format(&email)
                }
                .unwrap()
                .len();
            }
            let per = start.elapsed().as_secs_f64() / n as f64;
            println!(
                "build {name}: {:.2} us per message, {} bytes each",
                per * 1e6,
                bytes / n
            );
        }
    });
}

/// `show`: prints the sample message 0 as `Mailer::format` builds it.
fn show() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mailer = offline_mailer();
        let bytes = mailer.format(&sample::email(0)).unwrap();
        print!("{}", String::from_utf8_lossy(&bytes));
    });
}
