//! `bench tokens|store|daemon`: operations per second and latency percentiles.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use cloakroom::{Changes, Policy, Record, SessionId, Store, Value};
use cloakroom_token::KeyRing;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::cli::{BenchCommand, LoadArgs};
use crate::store::{failed, now, one_line, open_url, runtime};
use crate::{table, Failure};

/// The latencies of one kind of operation, in nanoseconds.
#[derive(Debug, Clone)]
struct Series {
    name: String,
    ops_per_sec: f64,
    p50: f64,
    p99: f64,
    p999: f64,
}

impl Series {
    /// From per-operation latencies and the wall time they took (`wall` counts
    /// concurrency: ops/s is operations over wall time, not over the sum of latencies).
    fn new(name: &str, mut ns: Vec<u64>, wall: Duration) -> Self {
        ns.sort_unstable();
        let at = |q: f64| -> f64 {
            if ns.is_empty() {
                return 0.0;
            }
            let i = ((ns.len() as f64 * q).ceil() as usize).clamp(1, ns.len()) - 1;
            ns[i] as f64
        };
        Self {
            name: name.to_owned(),
            ops_per_sec: ns.len() as f64 / wall.as_secs_f64().max(1e-9),
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "ops_per_sec": self.ops_per_sec.round(),
            "p50_ns": self.p50,
            "p99_ns": self.p99,
            "p999_ns": self.p999,
        })
    }
}

fn nanos(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn print_series(series: &[Series]) {
    let rows: Vec<Vec<String>> = series
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                format!("{:.0}", s.ops_per_sec),
                nanos(s.p50),
                nanos(s.p99),
                nanos(s.p999),
            ]
        })
        .collect();
    table::print(&["OPERATION", "OPS/S", "P50", "P99", "P99.9"], &rows);
}

fn bar(len: u64, what: &str) -> anyhow::Result<ProgressBar> {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr()).with_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {what} [{{elapsed_precise}}] {{wide_bar}} {{human_pos}}/{{human_len}} \
             ({{per_sec}}, {{eta}} left)"
        ))
        .map_err(|e| anyhow!("{e}"))?,
    );
    Ok(bar)
}

pub(crate) fn bench(command: BenchCommand) -> Result<(), Failure> {
    match command {
        BenchCommand::Tokens {
            iterations,
            python,
            json,
        } => tokens(iterations, python.as_deref(), json),
        BenchCommand::Store { url, load } => store(&url, load),
        BenchCommand::Daemon { endpoint, load } => {
            if !(endpoint.starts_with("ipc://") || endpoint.starts_with("tcp://")) {
                return Err(Failure::Usage(anyhow!(
                    "the daemon endpoint is ipc://PATH or tcp://HOST:PORT, not {endpoint:?}"
                )));
            }
            store(&format!("cloakroomd+{endpoint}"), load)
        }
    }
}

/// The payload every implementation signs: a session id's worth of text.
const PAYLOAD: &str = "s:3q2+7w==:user=950";
/// The key (as hex) the Python side uses; the Rust side uses a random ring.
const PY_SECRET: &str = "6b6579206f6620746865207369676e696e672062656e63686d61726b21212121";

/// The calling thread's CPU time in nanoseconds (the first field of
/// `/proc/thread-self/schedstat`), or None where the kernel does not say. Both sides of the
/// comparison read the same file, so their ratio is of CPU spent, whatever else runs on the
/// machine.
fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// The same three passes in Python for each library it can import: a warm-up, a timed loop
/// of `n` sign-then-verify pairs with no clock read inside it (its thread CPU time from
/// /proc/thread-self/schedstat, as the Rust side, and its wall time), then `n` pairs each
/// timed for the percentiles. Prints one JSON object.
const PYTHON: &str = r#"
import json, sys, time
n = int(sys.argv[1]); payload = sys.argv[2]; secret = bytes.fromhex(sys.argv[3])
def cpu():
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
out = {}
def run(name, sign, verify):
    for _ in range(max(1000, n // 10)):
        verify(sign(payload))
    pc = time.perf_counter_ns
    c0 = cpu(); w0 = pc()
    for _ in range(n):
        verify(sign(payload))
    w1 = pc(); c1 = cpu()
    lat = []
    for _ in range(n):
        t = pc()
        verify(sign(payload))
        lat.append(pc() - t)
    lat.sort()
    q = lambda f: lat[max(1, min(len(lat), -(-int(len(lat) * f * 1000) // 1000))) - 1]
    out[name] = {"ops": n, "wall_ns": w1 - w0,
                 "cpu_ns": None if c0 is None or c1 is None else c1 - c0,
                 "p50": q(0.5), "p99": q(0.99), "p999": q(0.999)}
try:
    from itsdangerous import TimestampSigner
    s = TimestampSigner(secret, salt="bench")
    run("itsdangerous", s.sign, lambda tok: s.unsign(tok, max_age=1800))
except ImportError:
    pass
try:
    from django.conf import settings
    if not settings.configured:
        settings.configure(SECRET_KEY=secret.hex())
    from django.core import signing
    d = signing.TimestampSigner(key=secret.hex(), salt="bench")
    run("django", d.sign, lambda tok: d.unsign(tok, max_age=1800))
except ImportError:
    pass
print(json.dumps(out))
"#;

fn python_interpreter(explicit: Option<&str>) -> Option<String> {
    match explicit {
        Some("none") => None,
        Some(p) => Some(p.to_owned()),
        None => std::env::var("CLOAKROOM_PYTHON")
            .ok()
            .filter(|p| !p.is_empty())
            .or_else(|| {
                let venv = Path::new("target/venv/bin/python");
                venv.exists().then(|| venv.display().to_string())
            })
            .or_else(|| Some("python3".to_owned())),
    }
}

/// One implementation's sign+verify figures: throughput from the untimed loop, latency
/// percentiles from the timed one.
#[derive(Debug, Clone)]
struct TokenRun {
    name: String,
    ops: u64,
    wall_ns: f64,
    cpu_ns: Option<f64>,
    latency: Series,
}

impl TokenRun {
    fn wall_ops_per_sec(&self) -> f64 {
        self.ops as f64 / (self.wall_ns / 1e9).max(1e-9)
    }

    fn cpu_ops_per_sec(&self) -> Option<f64> {
        self.cpu_ns
            .filter(|&ns| ns > 0.0)
            .map(|ns| self.ops as f64 / (ns / 1e9))
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "ops_per_sec": self.wall_ops_per_sec().round(),
            "cpu_ops_per_sec": self.cpu_ops_per_sec().map(f64::round),
            "p50_ns": self.latency.p50,
            "p99_ns": self.latency.p99,
            "p999_ns": self.latency.p999,
        })
    }
}

fn python_runs(python: &str, iterations: u64) -> anyhow::Result<Vec<TokenRun>> {
    let out = Command::new(python)
        .args(["-c", PYTHON, &iterations.to_string(), PAYLOAD, PY_SECRET])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {python}"))?;
    if !out.status.success() {
        bail!(
            "{python} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("reading what {python} printed"))?;
    let mut runs = Vec::new();
    for name in ["itsdangerous", "django"] {
        let Some(r) = v.get(name) else { continue };
        let get = |k: &str| r[k].as_f64().unwrap_or(0.0);
        let name = format!("{name} sign+verify");
        runs.push(TokenRun {
            ops: r["ops"].as_u64().unwrap_or(0),
            wall_ns: get("wall_ns"),
            cpu_ns: r["cpu_ns"].as_f64(),
            latency: Series {
                name: name.clone(),
                ops_per_sec: 0.0,
                p50: get("p50"),
                p99: get("p99"),
                p999: get("p999"),
            },
            name,
        });
    }
    Ok(runs)
}

/// Cloakroom's side: signed tokens (`Codec::sign` then `Codec::verify`, HMAC-SHA256), as
/// the Python libraries sign and verify, in the same three passes as [`PYTHON`].
fn cloakroom_run(iterations: u64) -> Result<TokenRun, Failure> {
    let ring = KeyRing::generate()?;
    let codec = ring.codec("bench")?;
    let t0 = now()?;
    let pair = || -> Result<(), Failure> {
        let token = codec.sign(PAYLOAD.as_bytes(), t0, t0 + 1800)?;
        std::hint::black_box(codec.verify(std::hint::black_box(&token), t0)?);
        Ok(())
    };
    for _ in 0..(iterations / 10).max(1000) {
        pair()?;
    }
    let progress = bar(iterations * 2, "sign+verify")?;
    // The throughput pass reads no clock inside the loop: a clock read per pair costs a
    // tenth of a pair here (and nothing measurable in Python), so it would tilt the ratio.
    let cpu0 = thread_cpu_ns();
    let started = Instant::now();
    for i in 0..iterations {
        pair()?;
        if i % 4096 == 0 {
            progress.set_position(i);
        }
    }
    let wall = started.elapsed();
    let cpu = thread_cpu_ns()
        .zip(cpu0)
        .map(|(b, a)| b.saturating_sub(a) as f64);
    let mut lat = Vec::with_capacity(usize::try_from(iterations).unwrap_or(0));
    for i in 0..iterations {
        let t = Instant::now();
        pair()?;
        lat.push(t.elapsed().as_nanos() as u64);
        if i % 4096 == 0 {
            progress.set_position(iterations + i);
        }
    }
    progress.finish_and_clear();
    let name = "cloakroom sign+verify";
    Ok(TokenRun {
        name: name.to_owned(),
        ops: iterations,
        wall_ns: wall.as_nanos() as f64,
        cpu_ns: cpu,
        latency: Series::new(name, lat, wall),
    })
}

fn tokens(iterations: u64, python: Option<&str>, json: bool) -> Result<(), Failure> {
    if iterations == 0 {
        return Err(Failure::Usage(anyhow!("--iterations must be at least 1")));
    }
    let mut runs = vec![cloakroom_run(iterations)?];
    let mut python_note = None;
    if let Some(py) = python_interpreter(python) {
        let spinner = ProgressBar::new_spinner().with_message(format!(
            "running the same {iterations} sign+verify pairs in {py}"
        ));
        spinner.enable_steady_tick(Duration::from_millis(200));
        match python_runs(&py, iterations) {
            Ok(r) if r.is_empty() => {
                python_note = Some(format!("{py} has neither itsdangerous nor Django"));
            }
            Ok(r) => runs.extend(r),
            Err(e) => python_note = Some(format!("no Python comparison: {}", one_line(&*e))),
        }
        spinner.finish_and_clear();
    }
    // The ratio is of thread CPU time when both sides could read it, else of wall time.
    let ours = &runs[0];
    let ratios: Vec<(String, f64, &str)> = runs[1..]
        .iter()
        .map(|r| match (ours.cpu_ops_per_sec(), r.cpu_ops_per_sec()) {
            (Some(a), Some(b)) => (r.name.clone(), a / b.max(1e-9), "CPU time"),
            _ => (
                r.name.clone(),
                ours.wall_ops_per_sec() / r.wall_ops_per_sec().max(1e-9),
                "wall time",
            ),
        })
        .collect();
    if json {
        let mut out = serde_json::Map::new();
        out.insert("iterations".into(), json!(iterations));
        for r in &runs {
            out.insert(r.name.clone(), r.json());
        }
        let speedup: serde_json::Map<String, serde_json::Value> = ratios
            .iter()
            .map(|(name, x, _)| (name.clone(), json!((x * 10.0).round() / 10.0)))
            .collect();
        out.insert("cloakroom_speedup".into(), json!(speedup));
        if let Some((_, _, clock)) = ratios.first() {
            out.insert("speedup_clock".into(), json!(clock));
        }
        if let Some(note) = &python_note {
            out.insert("note".into(), json!(note));
        }
        println!("{}", serde_json::Value::Object(out));
    } else {
        let rows: Vec<Vec<String>> = runs
            .iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    format!("{:.0}", r.wall_ops_per_sec()),
                    r.cpu_ops_per_sec()
                        .map_or_else(|| "-".to_owned(), |x| format!("{x:.0}")),
                    nanos(r.latency.p50),
                    nanos(r.latency.p99),
                    nanos(r.latency.p999),
                ]
            })
            .collect();
        table::print(
            &["OPERATION", "OPS/S", "OPS/CPU-S", "P50", "P99", "P99.9"],
            &rows,
        );
        for (name, x, clock) in &ratios {
            println!("cloakroom is {x:.1}x {name} (by {clock})");
        }
        if let Some(note) = python_note {
            eprintln!("{note}");
        }
    }
    Ok(())
}

fn store(url: &str, load: LoadArgs) -> Result<(), Failure> {
    let LoadArgs {
        iterations,
        concurrency,
        json,
    } = load;
    if iterations == 0 || concurrency == 0 {
        return Err(Failure::Usage(anyhow!(
            "--iterations and --concurrency must be at least 1"
        )));
    }
    let rt = runtime()?;
    rt.block_on(async {
        let target = cloakroom_stores::StoreUrl::parse(url).map_err(|e| anyhow!("--store: {e}"))?;
        let name = format!("{target:?}");
        let s: Arc<dyn Store> = open_url(target).await?;
        let t0 = now()?;
        let records: Vec<Record> = (0..iterations)
            .map(|_| {
                let id = SessionId::generate().map_err(|e| anyhow!("{e}"))?;
                let mut r = Record::new(id.hash(), t0, &Policy::default());
                r.user_id = Some("cloakroom-bench".into());
                Ok(r)
            })
            .collect::<anyhow::Result<_>>()?;
        let mut series = Vec::new();
        for op in ["create", "load", "apply", "delete"] {
            let progress = bar(iterations, op)?;
            let chunks: Vec<Vec<Record>> = records
                .chunks(records.len().div_ceil(concurrency))
                .map(<[Record]>::to_vec)
                .collect();
            let started = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for chunk in chunks {
                let s = Arc::clone(&s);
                let progress = progress.clone();
                tasks.spawn(async move {
                    let mut lat = Vec::with_capacity(chunk.len());
                    let mut changes = Changes::new();
                    changes.set("n", Value::from(1));
                    for r in &chunk {
                        let t = Instant::now();
                        match op {
                            "create" => s.create(r, r.last_seen).await.map(drop),
                            "load" => s.load(&r.id_hash, t0).await.map(drop),
                            "apply" => s
                                .apply(&r.id_hash, &changes, t0 + 1, t0 + 1801)
                                .await
                                .map(drop),
                            _ => s.delete(&r.id_hash).await.map(drop),
                        }?;
                        lat.push(t.elapsed().as_nanos() as u64);
                        progress.inc(1);
                    }
                    Ok::<_, cloakroom::store::Error>(lat)
                });
            }
            let mut lat = Vec::new();
            while let Some(done) = tasks.join_next().await {
                lat.extend(
                    done.map_err(|e| anyhow!("{e}"))?
                        .map_err(failed(&format!("{op} failed")))?,
                );
            }
            let wall = started.elapsed();
            progress.finish_and_clear();
            series.push(Series::new(op, lat, wall));
        }
        if json {
            let mut out = serde_json::Map::new();
            out.insert("store".into(), json!(name));
            out.insert("iterations".into(), json!(iterations));
            out.insert("concurrency".into(), json!(concurrency));
            for s in &series {
                out.insert(s.name.clone(), s.json());
            }
            println!("{}", serde_json::Value::Object(out));
        } else {
            println!("{name}: {iterations} sessions, {concurrency} at a time");
            print_series(&series);
        }
        Ok(())
    })
}
