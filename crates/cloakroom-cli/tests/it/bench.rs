//! `cloakroom bench`: the JSON a script reads, and the side-by-side Python run.

use crate::support::{cloakroom, json, stderr};

/// Without Python: Cloakroom's figures alone, both throughputs (wall and thread CPU) and the
/// percentiles, in order. A Python that cannot run is a note, not a failure; zero iterations
/// is a usage error.
#[test]
fn bench_tokens_prints_throughput_and_percentiles() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |python: &str| {
        let args = [
            "bench",
            "tokens",
            "--iterations",
            "3000",
            "--python",
            python,
            "--json",
        ];
        json(d, &args)
    };
    let v = run("none");
    assert_eq!(v["iterations"], 3000);
    let ours = &v["cloakroom sign+verify"];
    for key in [
        "ops_per_sec",
        "cpu_ops_per_sec",
        "p50_ns",
        "p99_ns",
        "p999_ns",
    ] {
        assert!(ours[key].as_f64().is_some_and(|x| x > 0.0), "{key}: {v}");
    }
    let p = |k: &str| ours[k].as_f64().unwrap();
    assert!(
        p("p50_ns") <= p("p99_ns") && p("p99_ns") <= p("p999_ns"),
        "{v}"
    );
    assert_eq!(v["cloakroom_speedup"], serde_json::json!({}), "{v}");
    assert!(v.get("note").is_none(), "{v}");

    let v = run("/nonexistent/python");
    assert!(v["cloakroom sign+verify"]["ops_per_sec"].as_f64().is_some());
    let note = v["note"].as_str().unwrap_or_default();
    assert!(note.contains("/nonexistent/python"), "{v}");
    let o = cloakroom(
        d,
        &["bench", "tokens", "--iterations", "0", "--python", "none"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn bench_store_on_sqlite_times_every_operation() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = format!("sqlite://{}", d.join("bench.db").display());
    let v = json(
        d,
        &[
            "bench",
            "store",
            &url,
            "--iterations",
            "200",
            "--concurrency",
            "4",
            "--json",
        ],
    );
    assert_eq!(
        (v["iterations"].as_u64(), v["concurrency"].as_u64()),
        (Some(200), Some(4))
    );
    for op in ["create", "load", "apply", "delete"] {
        assert!(
            v[op]["ops_per_sec"].as_f64().is_some_and(|x| x > 0.0),
            "{op}: {v}"
        );
        assert!(
            v[op]["p99_ns"].as_f64().is_some_and(|x| x > 0.0),
            "{op}: {v}"
        );
    }
}
