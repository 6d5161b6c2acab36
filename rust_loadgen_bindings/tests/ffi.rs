//! The FFI layer without Python: null SUTs in Rust driving the real core.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rust_loadgen_bindings::runtime::{
    self, CallbackError, CbResult, CompleteError, LogSettings, Qsl, QslHandler, Response, RunOptions, Sample, Sut,
    SutHandler, TestError, TestSettings,
};

// The core is a process-global singleton: run one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "mlbuild-lg-{tag}-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos() ^ (tag.len() as u128)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn log_settings(dir: &PathBuf) -> LogSettings {
    LogSettings { outdir: dir.to_string_lossy().into_owned(), enable_trace: false, ..LogSettings::default() }
}

fn summary(dir: &PathBuf) -> String {
    std::fs::read_to_string(dir.join("mlperf_log_summary.txt")).unwrap()
}

/// Completes every sample inline, on the issuing thread.
struct InlineNull {
    issued: AtomicUsize,
}

impl SutHandler for InlineNull {
    fn issue(&self, samples: &[Sample]) -> CbResult {
        self.issued.fetch_add(samples.len(), Ordering::Relaxed);
        let mut r: Vec<Response> = samples.iter().map(|s| Response { id: s.id, ..Default::default() }).collect();
        runtime::complete(&mut r, None).map_err(|e| CallbackError::new(e.to_string()))
    }
}

struct NullQsl;
impl QslHandler for NullQsl {}

fn offline(samples: u64, min_duration_ms: u64) -> TestSettings {
    let mut s = TestSettings::core_default();
    s.scenario = 3;
    s.mode = 2;
    s.offline_expected_qps = 1.0;
    s.min_duration_ms = min_duration_ms;
    s.min_query_count = samples;
    s
}

fn audit(dir: &PathBuf) -> String {
    dir.join("no-audit.config").to_string_lossy().into_owned()
}

#[test]
fn abi_matches() {
    assert!(runtime::abi_ok());
    assert_eq!(runtime::loadgen_version(), runtime::SDIST_VERSION);
    assert!(runtime::file_sha1s().iter().any(|(p, s)| p == "/loadgen.cc" && s.len() == 40));
    assert!(runtime::embedded_mlperf_conf().contains("performance_sample_count_override"));
}

#[test]
fn core_defaults() {
    let s = TestSettings::core_default();
    assert_eq!(s.min_duration_ms, 10000);
    assert_eq!(s.min_query_count, 100);
    assert_eq!(s.server_target_latency_ns, 100_000_000);
    assert_eq!(s.token_latency_scaling_factor, 0);
    let l = LogSettings::default();
    assert_eq!(l.outdir, ".");
    assert_eq!(l.prefix, "mlperf_log_");
    assert!(l.enable_trace);
}

#[test]
fn offline_null_sut_valid() {
    let _g = serial();
    let dir = tempdir("valid");
    let h = Arc::new(InlineNull { issued: AtomicUsize::new(0) });
    struct Fwd(Arc<InlineNull>);
    impl SutHandler for Fwd {
        fn issue(&self, s: &[Sample]) -> CbResult {
            self.0.issue(s)
        }
    }
    let sut = Sut::new("RustNullSUT", Box::new(Fwd(h.clone())));
    let qsl = Qsl::new("RustNullQSL", 1024, 64, Box::new(NullQsl)).unwrap();
    runtime::start_test(&sut, &qsl, &offline(5000, 0), &log_settings(&dir), &audit(&dir), &RunOptions::default())
        .unwrap();
    let s = summary(&dir);
    assert!(s.contains("Result is : VALID"), "{s}");
    assert!(s.contains("Scenario : Offline"));
    assert_eq!(h.issued.load(Ordering::Relaxed), 5000);
    let detail = std::fs::read_to_string(dir.join("mlperf_log_detail.txt")).unwrap();
    assert!(detail.contains("\"sut_name\", \"value\": \"RustNullSUT\""));
}

#[test]
fn offline_null_sut_invalid_min_duration() {
    let _g = serial();
    let dir = tempdir("invalid");
    let sut = Sut::new("RustNullSUT", Box::new(InlineNull { issued: AtomicUsize::new(0) }));
    let qsl = Qsl::new("RustNullQSL", 1024, 64, Box::new(NullQsl)).unwrap();
    // 1000 samples complete in microseconds: far below a 60 s minimum.
    runtime::start_test(&sut, &qsl, &offline(1000, 60_000), &log_settings(&dir), &audit(&dir), &RunOptions::default())
        .unwrap();
    let s = summary(&dir);
    assert!(s.contains("Result is : INVALID"), "{s}");
    assert!(s.contains("Min duration satisfied : NO"));
}

struct Failing;
impl SutHandler for Failing {
    fn issue(&self, _s: &[Sample]) -> CbResult {
        Err(CallbackError::new("boom"))
    }
}

#[test]
fn callback_error_fails_test_without_hanging() {
    let _g = serial();
    for scenario in 0..4 {
        let dir = tempdir("fail");
        let sut = Sut::new("Failing", Box::new(Failing));
        let qsl = Qsl::new("Q", 256, 64, Box::new(NullQsl)).unwrap();
        let mut s = offline(500, 0);
        s.scenario = scenario;
        s.min_duration_ms = 200;
        s.single_stream_expected_latency_ns = 1_000_000.0;
        s.multi_stream_expected_latency_ns = 1_000_000.0;
        s.server_target_qps = 1000.0;
        let t = Instant::now();
        let err = runtime::start_test(&sut, &qsl, &s, &log_settings(&dir), &audit(&dir), &RunOptions::default())
            .unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(20));
        match err {
            TestError::Callback { first, stage, .. } => {
                assert_eq!(first.message, "boom");
                assert_eq!(stage, "IssueQuery");
            }
            e => panic!("unexpected {e:?}"),
        }
    }
}

/// Never completes anything.
struct BlackHole;
impl SutHandler for BlackHole {
    fn issue(&self, _s: &[Sample]) -> CbResult {
        Ok(())
    }
}

#[test]
fn stall_watchdog_bounds_a_silent_sut() {
    let _g = serial();
    let dir = tempdir("stall");
    let sut = Sut::new("BlackHole", Box::new(BlackHole));
    let qsl = Qsl::new("Q", 256, 64, Box::new(NullQsl)).unwrap();
    let t = Instant::now();
    let opts = RunOptions { stall_timeout: Some(Duration::from_millis(300)), ..RunOptions::default() };
    let err = runtime::start_test(&sut, &qsl, &offline(100, 0), &log_settings(&dir), &audit(&dir), &opts).unwrap_err();
    assert!(matches!(err, TestError::Stalled { outstanding: 100, .. }), "{err:?}");
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[test]
fn unknown_ids_are_rejected_not_dereferenced() {
    let _g = serial();
    let mut r = vec![Response { id: 0xdead_beef, ..Default::default() }];
    assert!(matches!(runtime::complete(&mut r, None), Err(CompleteError::NoTest)));

    struct Bogus(Mutex<Option<String>>);
    impl SutHandler for Bogus {
        fn issue(&self, s: &[Sample]) -> CbResult {
            let mut r: Vec<Response> = s.iter().map(|s| Response { id: s.id, ..Default::default() }).collect();
            r.push(Response { id: 0x10, ..Default::default() });
            if let Err(e) = runtime::complete(&mut r, None) {
                *self.0.lock().unwrap() = Some(e.to_string());
            }
            Ok(())
        }
    }
    let dir = tempdir("bogus");
    let b = Arc::new(Bogus(Mutex::new(None)));
    struct Fwd(Arc<Bogus>);
    impl SutHandler for Fwd {
        fn issue(&self, s: &[Sample]) -> CbResult {
            self.0.issue(s)
        }
    }
    let sut = Sut::new("Bogus", Box::new(Fwd(b.clone())));
    let qsl = Qsl::new("Q", 256, 64, Box::new(NullQsl)).unwrap();
    runtime::start_test(&sut, &qsl, &offline(100, 0), &log_settings(&dir), &audit(&dir), &RunOptions::default())
        .unwrap();
    let msg = b.0.lock().unwrap().clone().unwrap();
    assert!(msg.contains("0x10"), "{msg}");
    assert!(summary(&dir).contains("Result is : VALID"));
}

#[test]
fn bad_settings_rejected_before_the_core_runs() {
    let _g = serial();
    let dir = tempdir("bad");
    let sut = Sut::new("N", Box::new(InlineNull { issued: AtomicUsize::new(0) }));
    let qsl = Qsl::new("Q", 256, 64, Box::new(NullQsl)).unwrap();
    let mut s = offline(100, 0);
    s.scenario = 2;
    s.server_target_qps = -5.0;
    let e = runtime::start_test(&sut, &qsl, &s, &log_settings(&dir), &audit(&dir), &RunOptions::default()).unwrap_err();
    assert!(e.to_string().contains("Invalid value for server_target_qps requested"), "{e}");
    s.server_target_qps = 0.0;
    assert!(runtime::start_test(&sut, &qsl, &s, &log_settings(&dir), &audit(&dir), &RunOptions::default()).is_err());
    assert!(Qsl::new("Q", 10, 64, Box::new(NullQsl)).is_err());
}

#[test]
fn from_config_reads_embedded_and_user_conf() {
    let _g = serial();
    let dir = tempdir("conf");
    let mut s = TestSettings::core_default();
    assert_eq!(s.from_config("", "retinanet", "Offline", 0).unwrap(), 0);
    assert_eq!(s.performance_sample_count_override, 64);
    assert_eq!(s.min_duration_ms, 600000);
    let bad = dir.join("bad.conf");
    std::fs::write(&bad, "*.Offline.target_qps = abc\n").unwrap();
    let mut s = TestSettings::core_default();
    assert_eq!(s.from_config(bad.to_str().unwrap(), "retinanet", "Offline", 2).unwrap(), -22);
}

/// The upstream py_demo_offline pattern without Python: per query, three threads each
/// complete a third of the samples after different sleeps and exit while the test goes
/// on. Through `runtime::complete` their completions reach the core from the binding's
/// completion thread, so the core's logger never loses a thread mid-test.
struct ThreeSlices {
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    calls_per_thread: usize,
}

impl SutHandler for ThreeSlices {
    fn issue(&self, samples: &[Sample]) -> CbResult {
        for i in 0..3usize {
            let mine: Vec<u64> = samples.iter().skip(i).step_by(3).map(|s| s.id).collect();
            let calls = self.calls_per_thread;
            self.threads.lock().unwrap().push(std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20 * (i as u64 + 1)));
                let step = mine.len().div_ceil(calls).max(1);
                for chunk in mine.chunks(step) {
                    let mut r: Vec<Response> = chunk.iter().map(|&id| Response { id, ..Default::default() }).collect();
                    runtime::complete(&mut r, None).unwrap();
                }
            }));
        }
        Ok(())
    }
}

#[test]
fn completions_from_short_lived_threads() {
    let _g = serial();
    for calls in [1usize, 30] {
        let handed_before = runtime::handoff::HANDOFFS.load(Ordering::Relaxed);
        let held_before = runtime::handoff::HELD_AT_EXIT.load(Ordering::Relaxed);
        for round in 0..5 {
            let dir = tempdir(&format!("slices-{calls}-{round}"));
            let h = ThreeSlices { threads: Mutex::new(Vec::new()), calls_per_thread: calls };
            let sut = Sut::new("RustSlices", Box::new(h));
            let qsl = Qsl::new("RustNullQSL", 1024, 64, Box::new(NullQsl)).unwrap();
            runtime::start_test(&sut, &qsl, &offline(6000, 0), &log_settings(&dir), &audit(&dir), &RunOptions::default())
                .unwrap();
            assert!(summary(&dir).contains("Result is : VALID"));
        }
        let handed = runtime::handoff::HANDOFFS.load(Ordering::Relaxed) - handed_before;
        let held = runtime::handoff::HELD_AT_EXIT.load(Ordering::Relaxed) - held_before;
        if calls == 1 {
            assert_eq!((handed, held), (15, 0));
        } else {
            // 8 hand-offs per thread, then direct calls and a hold at exit while the test ran.
            assert_eq!(handed, 15 * runtime::handoff::PROMOTE_AFTER as u64);
            assert!(held > 0 && held <= 15, "held {held}");
        }
    }
}

#[test]
fn sut_name_is_replaced_at_start() {
    let _g = serial();
    let dir = tempdir("name");
    let sut = Sut::new("FirstName", Box::new(InlineNull { issued: AtomicUsize::new(0) }));
    let qsl = Qsl::new("RustNullQSL", 1024, 64, Box::new(NullQsl)).unwrap();
    let opts = RunOptions { sut_name: Some("LateName".into()), ..RunOptions::default() };
    runtime::start_test(&sut, &qsl, &offline(100, 0), &log_settings(&dir), &audit(&dir), &opts).unwrap();
    let detail = std::fs::read_to_string(dir.join("mlperf_log_detail.txt")).unwrap();
    assert!(detail.contains("\"sut_name\", \"value\": \"LateName\""));
    assert_eq!(sut.name(), "LateName");
}
