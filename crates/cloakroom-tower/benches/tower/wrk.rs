//! The wrk driver: the workloads, the Lua scripts that send them, one run and its parse.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Workload {
    GetMany,
    GetOne,
    PostMany,
    PostOne,
}

impl Workload {
    pub(crate) const ALL: [Workload; 4] = [
        Workload::GetMany,
        Workload::GetOne,
        Workload::PostMany,
        Workload::PostOne,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Workload::GetMany => "GET reading the session, 256 users",
            Workload::GetOne => "GET reading the session, one user",
            Workload::PostMany => "POST changing a counter, 256 users",
            Workload::PostOne => "POST changing a counter, one user, concurrent",
        }
    }

    pub(crate) fn short(self) -> &'static str {
        match self {
            Workload::GetMany => "get-many",
            Workload::GetOne => "get-one",
            Workload::PostMany => "post-many",
            Workload::PostOne => "post-one",
        }
    }
}

/// Sessions per side for the many-users workloads.
pub(crate) const USERS: usize = 256;

/// One wrk run.
#[derive(Clone, Copy)]
pub(crate) struct Run {
    /// Answers, 2xx or not.
    pub(crate) requests: u64,
    /// 2xx answers per second.
    pub(crate) ok_rps: f64,
    pub(crate) p99: Duration,
    /// Answers that were not 2xx or 3xx, plus requests that got none (socket errors and
    /// timeouts).
    pub(crate) failed: u64,
}

/// A wrk script sending `method path` with the cookies in turn.
pub(crate) fn write_script(
    dir: &Path,
    name: &str,
    method: &str,
    path: &str,
    cookies: &[String],
) -> PathBuf {
    let mut lua = String::from("local cookies = {\n");
    for c in cookies {
        assert!(c
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\'));
        writeln!(lua, "  \"{c}\",").unwrap();
    }
    let body = if method == "POST" { "\"\"" } else { "nil" };
    write!(
        lua,
        r#"}}
local requests = {{}}
local i = 0
init = function(args)
  for k, c in ipairs(cookies) do
    requests[k] = wrk.format("{method}", "{path}", {{ ["Cookie"] = c }}, {body})
  end
end
request = function()
  i = i % #requests + 1
  return requests[i]
end
"#
    )
    .unwrap();
    let file = dir.join(format!("{name}.lua"));
    std::fs::write(&file, lua).unwrap();
    file
}

/// A wrk duration ("1.00s", "250.12ms", "3.21us", "1.50m") in seconds.
pub(crate) fn wrk_time(s: &str) -> f64 {
    let split = s
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or_else(|| panic!("wrk time {s:?}"));
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().unwrap_or_else(|_| panic!("wrk time {s:?}"));
    n * match unit {
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => panic!("wrk time unit {unit:?}"),
    }
}

pub(crate) fn parse_wrk(out: &str) -> Run {
    let mut requests = None;
    let mut elapsed = None;
    let mut p99 = None;
    let mut failed = 0u64;
    for line in out.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["99%", t] => p99 = Some(wrk_time(t)),
            [n, "requests", "in", t, ..] => {
                requests = Some(n.parse::<u64>().unwrap());
                elapsed = Some(wrk_time(t.trim_end_matches(',')));
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => failed += n.parse::<u64>().unwrap(),
            ["Socket", "errors:", rest @ ..] => {
                // connect 0, read 0, write 0, timeout 0
                for pair in rest.chunks(2) {
                    failed += pair[1].trim_end_matches(',').parse::<u64>().unwrap();
                }
            }
            _ => {}
        }
    }
    let (Some(requests), Some(elapsed), Some(p99)) = (requests, elapsed, p99) else {
        panic!("unexpected wrk output:\n{out}");
    };
    Run {
        requests,
        ok_rps: requests.saturating_sub(failed) as f64 / elapsed,
        p99: Duration::from_secs_f64(p99),
        failed,
    }
}

pub(crate) async fn wrk(addr: SocketAddr, script: &Path, conns: usize, secs: u64) -> Run {
    let out = tokio::process::Command::new("wrk")
        .args(["-t1", &format!("-c{conns}"), &format!("-d{secs}s")])
        .args(["--timeout", "2s", "--latency", "-s"])
        .arg(script)
        .arg(format!("http://{addr}"))
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!("cannot run wrk ({e}): install it with `apt-get install -y wrk` (scripts/setup.d/70-wrk.sh)")
        });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wrk failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_wrk(&text)
}
