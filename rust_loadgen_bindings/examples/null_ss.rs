//! Core-only cost of the SingleStream issue loop (no Python): a Rust null SUT.
use rust_loadgen_bindings::runtime::{self, CallbackError, CbResult, LogSettings, Qsl, QslHandler, Response, RunOptions, Sample, Sut, SutHandler, TestSettings};

struct Null;
impl SutHandler for Null {
    fn issue(&self, s: &[Sample]) -> CbResult {
        let mut r: Vec<Response> = s.iter().map(|s| Response { id: s.id, ..Default::default() }).collect();
        runtime::complete(&mut r, None).map_err(|e| CallbackError::new(e.to_string()))
    }
}
struct Q;
impl QslHandler for Q {}

/// `null_ss [EXPECTED_LATENCY_NS [MIN_DURATION_MS [TOTAL [PERF]]]]` (defaults 1000, 1000, 1024, 64):
/// the same settings bench/loadgen.py gives the Python SUTs, so the figures compare.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: f64| -> f64 { args.get(i).map_or(default, |a| a.parse().expect("a number")) };
    let dir = std::env::temp_dir().join(format!("lg-null-ss-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let mut s = TestSettings::core_default();
    s.scenario = 0;
    s.mode = 2;
    s.single_stream_expected_latency_ns = arg(0, 1000.0);
    s.min_duration_ms = arg(1, 1000.0) as u64;
    let log = LogSettings { outdir: dir.to_string_lossy().into(), enable_trace: false, ..Default::default() };
    let sut = Sut::new("N", Box::new(Null));
    let qsl = Qsl::new("Q", arg(2, 1024.0) as u64, arg(3, 64.0) as u64, Box::new(Q)).unwrap();
    runtime::start_test(&sut, &qsl, &s, &log, "none", &RunOptions::default()).unwrap();
    let d = std::fs::read_to_string(dir.join("mlperf_log_summary.txt")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    for l in d.lines().filter(|l| l.contains("QPS w") || l.contains("Result")) {
        println!("{l}");
    }
}
