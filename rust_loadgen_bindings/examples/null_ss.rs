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

fn main() {
    let dir = std::env::temp_dir().join("lg-null-ss");
    let _ = std::fs::create_dir_all(&dir);
    let mut s = TestSettings::core_default();
    s.scenario = 0;
    s.mode = 2;
    s.min_duration_ms = 1000;
    s.single_stream_expected_latency_ns = 1000.0;
    let log = LogSettings { outdir: dir.to_string_lossy().into(), enable_trace: false, ..Default::default() };
    let sut = Sut::new("N", Box::new(Null));
    let qsl = Qsl::new("Q", 1024, 64, Box::new(Q)).unwrap();
    runtime::start_test(&sut, &qsl, &s, &log, "none", &RunOptions::default()).unwrap();
    let d = std::fs::read_to_string(dir.join("mlperf_log_summary.txt")).unwrap();
    for l in d.lines().filter(|l| l.contains("QPS w") || l.contains("Result")) {
        println!("{l}");
    }
}
