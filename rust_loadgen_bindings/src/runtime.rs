//! Safe Rust layer over the shim: SUT/QSL objects backed by Rust trait
//! objects, `start_test`, and validated completions.
//!
//! Failure model (the core itself has no way to fail a test from a callback):
//! * a callback that returns an error (or panics) marks the running test as
//!   failed; every sample still outstanding is completed on the SUT's behalf
//!   with an empty response, and every later query is completed as soon as it
//!   is issued, without calling the SUT. The core then drains its generated
//!   query list and returns; `start_test` reports the first error.
//!   SingleStream/MultiStream/Offline drain in well under a second; Server
//!   still walks its schedule, i.e. returns after the scheduled duration.
//! * a stall watchdog (optional) does the same when samples are outstanding
//!   and no completion has arrived for the configured time.

use std::any::Any;
use std::ffi::{CStr, CString};
use std::fmt;
use std::os::raw::{c_char, c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crate::ffi;
pub use crate::ffi::{LgResponse as Response, LgSample as Sample, LgTestSettings as TestSettings};
use crate::registry::{Registry, Take};

/// An error raised by a SUT/QSL callback. `payload` carries the original
/// error object of a binding (a Python exception for the pyo3 module).
pub struct CallbackError {
    pub message: String,
    pub payload: Option<Box<dyn Any + Send>>,
}

impl CallbackError {
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), payload: None }
    }
    pub fn with_payload(message: impl Into<String>, payload: Box<dyn Any + Send>) -> Self {
        Self { message: message.into(), payload: Some(payload) }
    }
}

impl fmt::Debug for CallbackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CallbackError({:?})", self.message)
    }
}

pub type CbResult = Result<(), CallbackError>;

pub trait SutHandler: Send + Sync {
    fn issue(&self, samples: &[Sample]) -> CbResult;
    fn flush(&self) -> CbResult {
        Ok(())
    }
}

pub trait QslHandler: Send + Sync {
    fn load(&self, _indices: &[u64]) -> CbResult {
        Ok(())
    }
    fn unload(&self, _indices: &[u64]) -> CbResult {
        Ok(())
    }
}

#[derive(Debug)]
pub enum TestError {
    /// Another test is running in this process (the core is a singleton).
    Busy,
    /// Rejected before the core ran.
    InvalidSettings(String),
    /// A callback failed; the first error and the number of further ones.
    Callback { first: CallbackError, more: usize, stage: &'static str },
    /// The stall watchdog fired.
    Stalled { seconds: f64, outstanding: u64 },
    /// The core threw a C++ exception.
    Core(String),
}

impl fmt::Display for TestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TestError::Busy => write!(f, "a LoadGen test is already running in this process"),
            TestError::InvalidSettings(m) => write!(f, "invalid test settings: {m}"),
            TestError::Callback { first, more, stage } => {
                write!(f, "{stage} callback failed: {}", first.message)?;
                if *more > 0 {
                    write!(f, " (and {more} more callback errors)")?;
                }
                write!(f, "; the test was drained and is not valid")
            }
            TestError::Stalled { seconds, outstanding } => write!(
                f,
                "SUT stalled: no sample completed for {seconds:.1} s with {outstanding} samples \
                 outstanding; they were completed with empty responses and the test is not valid"
            ),
            TestError::Core(m) => write!(f, "LoadGen core error: {m}"),
        }
    }
}

#[derive(Debug)]
pub enum CompleteError {
    /// Ids not issued by the running test, or already completed.
    UnknownIds { ids: Vec<u64>, completed: usize },
    NoTest,
    Core(String),
}

impl fmt::Display for CompleteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompleteError::UnknownIds { ids, completed } => {
                let shown: Vec<String> = ids.iter().take(8).map(|i| format!("0x{i:x}")).collect();
                write!(
                    f,
                    "{} response id(s) not outstanding in the running test (never issued, already \
                     completed, or from an earlier test): {}{}; {} valid response(s) were completed",
                    ids.len(),
                    shown.join(", "),
                    if ids.len() > 8 { ", ..." } else { "" },
                    completed
                )
            }
            CompleteError::NoTest => write!(f, "no LoadGen test is running: nothing to complete"),
            CompleteError::Core(m) => write!(f, "LoadGen core error: {m}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Process-global run state (the core is a process-global singleton too).

struct Failure {
    stage: &'static str,
    error: CallbackError,
}

struct State {
    test_lock: Mutex<()>,
    active: AtomicBool,
    failed: AtomicBool,
    registry: Mutex<Registry>,
    failures: Mutex<Vec<Failure>>,
    stalled: Mutex<Option<(f64, u64)>>,
    progress: AtomicU64,
}

static STATE: LazyLock<State> = LazyLock::new(|| State {
    test_lock: Mutex::new(()),
    active: AtomicBool::new(false),
    failed: AtomicBool::new(false),
    registry: Mutex::new(Registry::default()),
    failures: Mutex::new(Vec::new()),
    stalled: Mutex::new(None),
    progress: AtomicU64::new(0),
});

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// True while a test runs and no callback has failed.
pub fn test_active() -> bool {
    STATE.active.load(Ordering::Acquire)
}

pub fn test_failed() -> bool {
    STATE.failed.load(Ordering::Acquire)
}

const ERRLEN: usize = 1024;

/// The shape shared by the core's two completion entry points
/// (`lg_samples_complete`, `lg_first_token_complete`).
type CoreCompleteFn =
    unsafe extern "C" fn(*mut Response, usize, Option<ffi::ResponseFn>, *mut c_void, *mut c_char, usize) -> c_int;

/// Hands `resps` to one of the core's completion entry points, with the optional
/// per-response callback, and turns a C++ exception into its message.
///
/// The core logs every completion through a logger owned by the calling thread
/// (`TlsLogger`); when that thread exits during a test, the core's IO thread may
/// swap the buffers of the freed logger (`TlsLogger::SwapBuffers`, an open
/// upstream race) and the process crashes. So only threads that cannot exit
/// while a test runs call the core directly:
/// * the LoadGen's own threads inside its callbacks (issue, flush, load/unload),
///   threads blocked in StartTest/RegisterIssueQueryThread, the main thread, and
///   the binding's completion thread;
/// * threads that have completed `handoff::PROMOTE_AFTER` times already (long-lived
///   workers): right after their first direct call, a thread-exit hook is
///   registered that runs before the core's own one and, if a test is running,
///   holds the exiting thread until the test has ended.
/// Completions from any other thread (short-lived ones) are run by the binding's
/// completion thread while the caller waits, so the caller's buffers stay valid and
/// its errors and response callbacks behave exactly as on a direct call.
fn call_core(f: CoreCompleteFn, resps: &mut [Response], cb: Option<&mut dyn FnMut(&mut Response)>) -> Result<(), String> {
    match handoff::route() {
        handoff::Route::Direct => return call_core_here(f, resps, cb),
        handoff::Route::DirectFirst => {
            let r = call_core_here(f, resps, cb);
            // The core registered its logger's thread-exit destructor in that call
            // (every non-empty completion logs); ours, registered now, runs first.
            handoff::hold_exit_while_testing();
            return r;
        }
        handoff::Route::Handoff => {}
    }
    let mut out: Result<(), String> = Ok(());
    let mut cb = cb;
    let mut work = || out = call_core_here(f, &mut *resps, cb.take());
    handoff::run_on_completer(&mut work);
    out
}

fn call_core_here(f: CoreCompleteFn, resps: &mut [Response], cb: Option<&mut dyn FnMut(&mut Response)>) -> Result<(), String> {
    let mut err = [0 as c_char; ERRLEN];
    let rc = unsafe {
        match cb {
            None => f(resps.as_mut_ptr(), resps.len(), None, std::ptr::null_mut(), err.as_mut_ptr(), ERRLEN),
            Some(cb) => {
                let mut cb: &mut dyn FnMut(&mut Response) = cb;
                f(
                    resps.as_mut_ptr(),
                    resps.len(),
                    Some(response_trampoline),
                    &mut cb as *mut &mut dyn FnMut(&mut Response) as *mut c_void,
                    err.as_mut_ptr(),
                    ERRLEN,
                )
            }
        }
    };
    if rc != 0 {
        return Err(unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy().into_owned());
    }
    Ok(())
}

fn core_complete(resps: &mut [Response], cb: Option<&mut dyn FnMut(&mut Response)>) -> Result<(), String> {
    if resps.is_empty() {
        return Ok(());
    }
    let result = call_core(ffi::lg_samples_complete, resps, cb);
    STATE.progress.fetch_add(1, Ordering::Release);
    result
}

unsafe extern "C" fn response_trampoline(ctx: *mut c_void, r: *mut Response) {
    let f = &mut *(ctx as *mut &mut dyn FnMut(&mut Response));
    // A panic must not unwind into C++; the closure records its own errors.
    let _ = catch_unwind(AssertUnwindSafe(|| f(&mut *r)));
}

/// Completes ids on the SUT's behalf (empty responses). Only ids still
/// outstanding are passed to the core.
fn force_complete(ids: impl IntoIterator<Item = u64>) {
    let mut resps: Vec<Response> = {
        let mut reg = lock(&STATE.registry);
        ids.into_iter()
            .filter(|&id| matches!(reg.take(id), Take::Ok))
            .map(|id| Response { id, ..Default::default() })
            .collect()
    };
    let _ = core_complete(&mut resps, None);
}

fn force_complete_all() {
    let ids = lock(&STATE.registry).drain();
    let mut resps: Vec<Response> = ids.into_iter().map(|id| Response { id, ..Default::default() }).collect();
    let _ = core_complete(&mut resps, None);
}

/// Marks the running test failed and releases everything outstanding.
fn fail(stage: &'static str, error: CallbackError) {
    lock(&STATE.failures).push(Failure { stage, error });
    STATE.failed.store(true, Ordering::Release);
    force_complete_all();
}

fn run_cb(stage: &'static str, f: impl FnOnce() -> CbResult) {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => fail(stage, e),
        Err(p) => {
            let msg = if let Some(s) = p.downcast_ref::<&str>() {
                s.to_string()
            } else if let Some(s) = p.downcast_ref::<String>() {
                s.clone()
            } else {
                "panic".to_string()
            };
            fail(stage, CallbackError::new(format!("panic: {msg}")));
        }
    }
}

// ---------------------------------------------------------------------------
// SUT / QSL

struct SutCtx {
    handler: Box<dyn SutHandler>,
}

pub struct Sut {
    raw: *mut c_void,
    ctx: *mut SutCtx,
    name: Mutex<String>,
}

unsafe impl Send for Sut {}
unsafe impl Sync for Sut {}

unsafe extern "C" fn sut_issue(ctx: *mut c_void, samples: *const Sample, n: usize) {
    let _direct = handoff::DirectScope::enter();
    let ctx = &*(ctx as *const SutCtx);
    let samples = if n == 0 { &[][..] } else { std::slice::from_raw_parts(samples, n) };
    lock(&STATE.registry).register(samples.iter().map(|s| s.id));
    if STATE.failed.load(Ordering::Acquire) {
        force_complete(samples.iter().map(|s| s.id));
        return;
    }
    run_cb("IssueQuery", || ctx.handler.issue(samples));
}

unsafe extern "C" fn sut_flush(ctx: *mut c_void) {
    let _direct = handoff::DirectScope::enter();
    let ctx = &*(ctx as *const SutCtx);
    if STATE.failed.load(Ordering::Acquire) {
        return;
    }
    run_cb("FlushQueries", || ctx.handler.flush());
}

impl Sut {
    pub fn new(name: &str, handler: Box<dyn SutHandler>) -> Sut {
        let ctx = Box::into_raw(Box::new(SutCtx { handler }));
        let cname = CString::new(name.replace('\0', "")).unwrap();
        let raw = unsafe { ffi::lg_sut_new(cname.as_ptr(), ctx as *mut c_void, sut_issue, sut_flush) };
        assert!(!raw.is_null(), "lg_sut_new failed");
        Sut { raw, ctx, name: Mutex::new(name.to_string()) }
    }
    pub fn name(&self) -> String {
        lock(&self.name).clone()
    }
    /// Replaces the name the core reads (`SystemUnderTest::Name`). `start_test`
    /// calls it (RunOptions::sut_name) once no other test can be running.
    fn set_name(&self, name: &str) {
        let cname = CString::new(name.replace('\0', "")).unwrap();
        let mut g = lock(&self.name);
        unsafe { ffi::lg_sut_set_name(self.raw, cname.as_ptr()) };
        *g = name.to_string();
    }
    pub fn handler(&self) -> &dyn SutHandler {
        unsafe { &*(*self.ctx).handler }
    }
}

impl Drop for Sut {
    fn drop(&mut self) {
        unsafe {
            ffi::lg_sut_free(self.raw);
            drop(Box::from_raw(self.ctx));
        }
    }
}

struct QslCtx {
    handler: Box<dyn QslHandler>,
}

pub struct Qsl {
    raw: *mut c_void,
    ctx: *mut QslCtx,
    pub total: u64,
    pub performance: u64,
}

unsafe impl Send for Qsl {}
unsafe impl Sync for Qsl {}

unsafe extern "C" fn qsl_load(ctx: *mut c_void, idx: *const u64, n: usize) {
    let _direct = handoff::DirectScope::enter();
    let ctx = &*(ctx as *const QslCtx);
    if STATE.failed.load(Ordering::Acquire) {
        return;
    }
    let idx = if n == 0 { &[][..] } else { std::slice::from_raw_parts(idx, n) };
    run_cb("LoadSamplesToRam", || ctx.handler.load(idx));
}

unsafe extern "C" fn qsl_unload(ctx: *mut c_void, idx: *const u64, n: usize) {
    let _direct = handoff::DirectScope::enter();
    let ctx = &*(ctx as *const QslCtx);
    if STATE.failed.load(Ordering::Acquire) {
        return;
    }
    let idx = if n == 0 { &[][..] } else { std::slice::from_raw_parts(idx, n) };
    run_cb("UnloadSamplesFromRam", || ctx.handler.unload(idx));
}

impl Qsl {
    /// `performance > total` and `total == 0` are rejected: the core would
    /// silently clamp the former and divide by the latter.
    pub fn new(name: &str, total: u64, performance: u64, handler: Box<dyn QslHandler>) -> Result<Qsl, String> {
        if total == 0 {
            return Err("QSL total_sample_count must be > 0".into());
        }
        if performance == 0 {
            return Err("QSL performance_sample_count must be > 0".into());
        }
        if performance > total {
            return Err(format!(
                "QSL performance_sample_count ({performance}) is larger than total_sample_count ({total})"
            ));
        }
        let ctx = Box::into_raw(Box::new(QslCtx { handler }));
        let cname = CString::new(name.replace('\0', "")).unwrap();
        let raw = unsafe { ffi::lg_qsl_new(cname.as_ptr(), total, performance, ctx as *mut c_void, qsl_load, qsl_unload) };
        assert!(!raw.is_null(), "lg_qsl_new failed");
        Ok(Qsl { raw, ctx, total, performance })
    }
}

impl Drop for Qsl {
    fn drop(&mut self) {
        unsafe {
            ffi::lg_qsl_free(self.raw);
            drop(Box::from_raw(self.ctx));
        }
    }
}

// ---------------------------------------------------------------------------
// Settings

pub const SCENARIOS: [&str; 4] = ["SingleStream", "MultiStream", "Server", "Offline"];
pub const MODES: [&str; 4] = ["SubmissionRun", "AccuracyOnly", "PerformanceOnly", "FindPeakPerformance"];

impl TestSettings {
    /// The core's defaults (value-initialised `mlperf::TestSettings`).
    pub fn core_default() -> TestSettings {
        let mut s = TestSettings::default();
        unsafe { ffi::lg_test_settings_default(&mut s) };
        s
    }

    /// `TestSettings::FromConfig` of the core; returns its status (0 = ok).
    pub fn from_config(&mut self, path: &str, model: &str, scenario: &str, conf_type: i32) -> Result<i32, String> {
        let p = CString::new(path).map_err(|e| e.to_string())?;
        let m = CString::new(model).map_err(|e| e.to_string())?;
        let s = CString::new(scenario).map_err(|e| e.to_string())?;
        let mut err = [0 as c_char; ERRLEN];
        let rc = unsafe { ffi::lg_from_config(self, p.as_ptr(), m.as_ptr(), s.as_ptr(), conf_type, err.as_mut_ptr(), ERRLEN) };
        if rc == -100000 {
            return Err(unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy().into_owned());
        }
        Ok(rc)
    }

    /// Checks that would otherwise make the core hang, crash or silently
    /// substitute a value. Messages reuse the core's wording where it has one.
    pub fn validate(&self) -> Result<(), String> {
        let sc = self.scenario;
        if !(0..4).contains(&sc) {
            return Err(format!("unknown scenario {sc}"));
        }
        if !(0..4).contains(&self.mode) {
            return Err(format!("unknown mode {}", self.mode));
        }
        let pct = |name: &str, v: f64| -> Result<(), String> {
            if v.is_finite() && v > 0.0 && v < 1.0 {
                Ok(())
            } else {
                Err(format!("{name} must be a fraction in (0, 1), got {v}"))
            }
        };
        match SCENARIOS[sc as usize] {
            "SingleStream" => {
                let v = self.single_stream_expected_latency_ns;
                if !(v.is_finite() && v > 0.0) {
                    return Err(format!(
                        "single_stream_expected_latency_ns must be > 0, got {v} (the core would divide by it)"
                    ));
                }
                pct("single_stream_target_latency_percentile", self.single_stream_target_latency_percentile)?;
            }
            "MultiStream" => {
                let v = self.multi_stream_expected_latency_ns;
                if !(v.is_finite() && v > 0.0) {
                    return Err(format!(
                        "multi_stream_expected_latency_ns must be > 0, got {v} (the core would divide by it)"
                    ));
                }
                if self.multi_stream_samples_per_query == 0 {
                    return Err("multi_stream_samples_per_query must be > 0".into());
                }
                pct("multi_stream_target_latency_percentile", self.multi_stream_target_latency_percentile)?;
            }
            "Server" => {
                let v = self.server_target_qps;
                if v < 0.0 {
                    return Err(format!(
                        "Invalid value for server_target_qps requested. requested: {v} using: 1 \
                         (the core would silently run at 1 QPS)"
                    ));
                }
                if !(v.is_finite() && v > 0.0) {
                    return Err(format!(
                        "server_target_qps must be > 0, got {v} (0 schedules every query at infinity)"
                    ));
                }
                pct("server_target_latency_percentile", self.server_target_latency_percentile)?;
            }
            _ => {
                let v = self.offline_expected_qps;
                if v < 0.0 {
                    return Err(format!(
                        "Invalid value for offline_expected_qps requested. requested: {v} using: 1 \
                         (the core would silently use 1)"
                    ));
                }
                if !(v.is_finite() && v > 0.0) {
                    return Err(format!("offline_expected_qps must be > 0, got {v}"));
                }
            }
        }
        if !(0.0..=1.0).contains(&self.accuracy_log_probability) {
            return Err(format!(
                "accuracy_log_probability must be in [0, 1], got {}",
                self.accuracy_log_probability
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
pub struct LogSettings {
    pub outdir: String,
    pub prefix: String,
    pub suffix: String,
    pub prefix_with_datetime: bool,
    pub copy_detail_to_stdout: bool,
    pub copy_summary_to_stdout: bool,
    pub log_mode: i64,
    pub log_mode_async_poll_interval_ms: u64,
    pub enable_trace: bool,
}

impl Default for LogSettings {
    /// The core's defaults (`mlperf::LogSettings{}`): outdir ".", trace on.
    fn default() -> Self {
        const CAP: usize = 256;
        let mut a = [0 as c_char; CAP];
        let mut b = [0 as c_char; CAP];
        let mut c = [0 as c_char; CAP];
        let mut raw = ffi::LgLogSettings {
            outdir: std::ptr::null(),
            prefix: std::ptr::null(),
            suffix: std::ptr::null(),
            prefix_with_datetime: 0,
            copy_detail_to_stdout: 0,
            copy_summary_to_stdout: 0,
            log_mode: 0,
            log_mode_async_poll_interval_ms: 0,
            enable_trace: 0,
        };
        unsafe { ffi::lg_log_settings_default(&mut raw, a.as_mut_ptr(), b.as_mut_ptr(), c.as_mut_ptr(), CAP) };
        let s = |p: &[c_char]| unsafe { CStr::from_ptr(p.as_ptr()) }.to_string_lossy().into_owned();
        LogSettings {
            outdir: s(&a),
            prefix: s(&b),
            suffix: s(&c),
            prefix_with_datetime: raw.prefix_with_datetime != 0,
            copy_detail_to_stdout: raw.copy_detail_to_stdout != 0,
            copy_summary_to_stdout: raw.copy_summary_to_stdout != 0,
            log_mode: raw.log_mode,
            log_mode_async_poll_interval_ms: raw.log_mode_async_poll_interval_ms,
            enable_trace: raw.enable_trace != 0,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Fail the test when samples are outstanding and none completes for
    /// this long. None: wait forever, like the official bindings.
    pub stall_timeout: Option<Duration>,
    /// A name for the SUT, set before the core starts (the official QDL asks
    /// its name callback at StartTest).
    pub sut_name: Option<String>,
}

// ---------------------------------------------------------------------------
// Running a test

struct Watchdog {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: thread::JoinHandle<()>,
}

fn start_watchdog(timeout: Duration) -> Watchdog {
    let stop = Arc::new((Mutex::new(false), Condvar::new()));
    let stop2 = stop.clone();
    let tick = (timeout / 4).clamp(Duration::from_millis(5), Duration::from_millis(250));
    let handle = thread::Builder::new()
        .name("mlbuild-lg-watchdog".into())
        .spawn(move || {
            let (m, cv) = &*stop2;
            let mut last = STATE.progress.load(Ordering::Acquire);
            let mut since = Instant::now();
            loop {
                let g = lock(m);
                let (g, _) = cv.wait_timeout(g, tick).unwrap_or_else(|e| e.into_inner());
                if *g {
                    return;
                }
                drop(g);
                let now = STATE.progress.load(Ordering::Acquire);
                let outstanding = lock(&STATE.registry).outstanding();
                if now != last || outstanding == 0 || STATE.failed.load(Ordering::Acquire) {
                    last = now;
                    since = Instant::now();
                    continue;
                }
                if since.elapsed() >= timeout {
                    *lock(&STATE.stalled) = Some((since.elapsed().as_secs_f64(), outstanding));
                    fail(
                        "stall watchdog",
                        CallbackError::new(format!(
                            "no sample completed for {:.1} s with {outstanding} outstanding",
                            since.elapsed().as_secs_f64()
                        )),
                    );
                    since = Instant::now();
                }
            }
        })
        .expect("spawn watchdog");
    Watchdog { stop, handle }
}

/// Runs one test on the core. Blocks until the core returns.
pub fn start_test(
    sut: &Sut,
    qsl: &Qsl,
    settings: &TestSettings,
    log: &LogSettings,
    audit_config: &str,
    opts: &RunOptions,
) -> Result<(), TestError> {
    settings.validate().map_err(TestError::InvalidSettings)?;
    let _guard = match STATE.test_lock.try_lock() {
        Ok(g) => g,
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return Err(TestError::Busy),
    };
    if let Some(name) = &opts.sut_name {
        sut.set_name(name);
    }
    let cstr = |s: &str| CString::new(s.replace('\0', "")).unwrap();
    let (outdir, prefix, suffix, audit) = (cstr(&log.outdir), cstr(&log.prefix), cstr(&log.suffix), cstr(audit_config));
    let raw_log = ffi::LgLogSettings {
        outdir: outdir.as_ptr(),
        prefix: prefix.as_ptr(),
        suffix: suffix.as_ptr(),
        prefix_with_datetime: log.prefix_with_datetime as u64,
        copy_detail_to_stdout: log.copy_detail_to_stdout as u64,
        copy_summary_to_stdout: log.copy_summary_to_stdout as u64,
        log_mode: log.log_mode,
        log_mode_async_poll_interval_ms: log.log_mode_async_poll_interval_ms,
        enable_trace: log.enable_trace as u64,
    };

    lock(&STATE.registry).clear();
    lock(&STATE.failures).clear();
    *lock(&STATE.stalled) = None;
    STATE.failed.store(false, Ordering::Release);
    STATE.active.store(true, Ordering::Release);
    handoff::set_testing(true);
    let wd = opts.stall_timeout.map(start_watchdog);

    let mut err = [0 as c_char; ERRLEN];
    // The calling thread blocks in the core until the test ends: it is as safe
    // for direct completions as the LoadGen's own threads.
    let _direct = handoff::DirectScope::enter();
    let rc = unsafe { ffi::lg_start_test(sut.raw, qsl.raw, settings, &raw_log, audit.as_ptr(), err.as_mut_ptr(), ERRLEN) };

    if let Some(wd) = wd {
        *lock(&wd.stop.0) = true;
        wd.stop.1.notify_all();
        let _ = wd.handle.join();
    }
    STATE.active.store(false, Ordering::Release);
    // The core's IO thread has stopped: threads held at exit may go.
    handoff::set_testing(false);
    lock(&STATE.registry).clear();
    let mut failures = std::mem::take(&mut *lock(&STATE.failures));
    let stalled = lock(&STATE.stalled).take();
    STATE.failed.store(false, Ordering::Release);

    if rc != 0 {
        return Err(TestError::Core(unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy().into_owned()));
    }
    if let Some((seconds, outstanding)) = stalled {
        if failures.first().map(|f| f.stage) == Some("stall watchdog") {
            return Err(TestError::Stalled { seconds, outstanding });
        }
    }
    if !failures.is_empty() {
        let more = failures.len() - 1;
        let first = failures.swap_remove(0);
        return Err(TestError::Callback { first: first.error, more, stage: first.stage });
    }
    Ok(())
}

/// Validates and completes responses. Valid ones always reach the core, even
/// when some ids are rejected. Once a test has failed, unknown ids are
/// silently ignored (they were completed on the SUT's behalf).
pub fn complete(resps: &mut Vec<Response>, cb: Option<&mut dyn FnMut(&mut Response)>) -> Result<(), CompleteError> {
    if !STATE.active.load(Ordering::Acquire) {
        return if resps.is_empty() { Ok(()) } else { Err(CompleteError::NoTest) };
    }
    let mut bad = Vec::new();
    {
        let mut reg = lock(&STATE.registry);
        resps.retain(|r| match reg.take(r.id) {
            Take::Ok => true,
            Take::Unknown => {
                bad.push(r.id);
                false
            }
        });
    }
    core_complete(resps, cb).map_err(CompleteError::Core)?;
    if !bad.is_empty() && !STATE.failed.load(Ordering::Acquire) {
        return Err(CompleteError::UnknownIds { ids: bad, completed: resps.len() });
    }
    Ok(())
}

/// `FirstTokenComplete`: ids must be outstanding (not yet completed).
pub fn first_token_complete(resps: &mut Vec<Response>, cb: Option<&mut dyn FnMut(&mut Response)>) -> Result<(), CompleteError> {
    if !STATE.active.load(Ordering::Acquire) {
        return if resps.is_empty() { Ok(()) } else { Err(CompleteError::NoTest) };
    }
    let mut bad = Vec::new();
    {
        let reg = lock(&STATE.registry);
        resps.retain(|r| {
            let ok = reg.contains(r.id);
            if !ok {
                bad.push(r.id);
            }
            ok
        });
    }
    if !resps.is_empty() {
        call_core(ffi::lg_first_token_complete, resps, cb).map_err(CompleteError::Core)?;
    }
    if !bad.is_empty() && !STATE.failed.load(Ordering::Acquire) {
        return Err(CompleteError::UnknownIds { ids: bad, completed: resps.len() });
    }
    Ok(())
}

/// `mlperf::RegisterIssueQueryThread` (blocks: the calling thread becomes an
/// issue thread until the test ends).
pub fn register_issue_query_thread() {
    let _direct = handoff::DirectScope::enter();
    unsafe { ffi::lg_register_issue_query_thread() }
}

// ---------------------------------------------------------------------------
// Build / version information

pub fn version_string(which: i32) -> String {
    unsafe { CStr::from_ptr(ffi::lg_version_string(which)) }.to_string_lossy().into_owned()
}

pub fn loadgen_version() -> String {
    version_string(0)
}

/// `(path, sha1)` pairs exactly as the core logs them in `loadgen_file_sha1`.
pub fn file_sha1s() -> Vec<(String, String)> {
    version_string(7)
        .lines()
        .filter_map(|l| {
            let (sha, path) = l.split_once(' ')?;
            Some((path.to_string(), sha.to_string()))
        })
        .collect()
}

pub fn embedded_mlperf_conf() -> String {
    version_string(8)
}

pub const CXX_VERSION: &str = env!("LG_BUILD_CXX_VERSION");
pub const RUSTC_VERSION: &str = env!("LG_BUILD_RUSTC_VERSION");
pub const SDIST_VERSION: &str = env!("LG_BUILD_SDIST_VERSION");
pub const CRATE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Cross-checks the Rust mirrors of the C structs against the C++ compiler.
pub fn abi_ok() -> bool {
    unsafe {
        ffi::lg_abi_sizeof(0) == std::mem::size_of::<Sample>()
            && ffi::lg_abi_sizeof(1) == std::mem::size_of::<Response>()
            && ffi::lg_abi_sizeof(2) == std::mem::size_of::<TestSettings>()
            && ffi::lg_abi_sizeof(3) == std::mem::size_of::<ffi::LgLogSettings>()
    }
}

// ---------------------------------------------------------------------------
// The completion thread (see `call_core`).

pub mod handoff {
    use std::cell::Cell;
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Condvar, Mutex};
    use std::thread::{self, Thread};

    thread_local! {
        static DIRECT_DEPTH: Cell<u32> = const { Cell::new(0) };
        static IS_MAIN: Cell<Option<bool>> = const { Cell::new(None) };
    }

    /// Marks the current thread as one that may call the core directly while
    /// the scope lives (nesting allowed).
    pub struct DirectScope(());

    impl DirectScope {
        pub fn enter() -> DirectScope {
            DIRECT_DEPTH.with(|d| d.set(d.get() + 1));
            DirectScope(())
        }
    }

    impl Drop for DirectScope {
        fn drop(&mut self) {
            DIRECT_DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
        }
    }

    fn is_main_thread() -> bool {
        // The main thread's id is the process id; it exits only with the process.
        IS_MAIN.with(|m| match m.get() {
            Some(v) => v,
            None => {
                let v = unsafe { libc_gettid() == libc_getpid() };
                m.set(Some(v));
                v
            }
        })
    }

    extern "C" {
        #[link_name = "getpid"]
        fn libc_getpid() -> i32;
        #[link_name = "gettid"]
        fn libc_gettid() -> i32;
    }

    /// May the current thread call the core's completion functions directly?
    pub fn direct() -> bool {
        DIRECT_DEPTH.with(|d| d.get() > 0) || is_main_thread()
    }

    /// Completions a thread hands off before it counts as long-lived and calls the
    /// core itself (a thread per sample or per query never gets there).
    pub const PROMOTE_AFTER: u32 = 8;

    thread_local! {
        /// Hand-offs so far; PROMOTE_AFTER + 1: promoted (exit hook registered).
        static HANDED: Cell<u32> = const { Cell::new(0) };
    }

    pub enum Route {
        Direct,
        /// The thread's first direct call: register the exit hook after it.
        DirectFirst,
        Handoff,
    }

    pub fn route() -> Route {
        if direct() {
            return Route::Direct;
        }
        HANDED.with(|h| {
            let n = h.get();
            if n > PROMOTE_AFTER {
                Route::Direct
            } else if n == PROMOTE_AFTER {
                Route::DirectFirst
            } else {
                h.set(n + 1);
                Route::Handoff
            }
        })
    }

    /// Test start/end, for the exit hook (set by start_test).
    pub static TESTING: Mutex<bool> = Mutex::new(false);
    pub static TEST_ENDED: Condvar = Condvar::new();
    /// Threads held at exit so far (tests).
    pub static HELD_AT_EXIT: AtomicU64 = AtomicU64::new(0);

    pub fn set_testing(on: bool) {
        *TESTING.lock().unwrap_or_else(|e| e.into_inner()) = on;
        if !on {
            TEST_ENDED.notify_all();
        }
    }

    extern "C" {
        fn __cxa_thread_atexit_impl(
            dtor: unsafe extern "C" fn(*mut std::ffi::c_void),
            obj: *mut std::ffi::c_void,
            dso_symbol: *mut std::ffi::c_void,
        ) -> i32;
    }

    static DSO_ANCHOR: u8 = 0;

    unsafe extern "C" fn exit_hook(_obj: *mut std::ffi::c_void) {
        let mut g = TESTING.lock().unwrap_or_else(|e| e.into_inner());
        if *g {
            HELD_AT_EXIT.fetch_add(1, Ordering::Relaxed);
        }
        while *g {
            g = TEST_ENDED.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Registers the exit hook of the current thread (once) and marks it promoted.
    /// Thread-exit destructors run in reverse order of registration, so this one,
    /// registered after the core's, runs before the core hands its logger over.
    pub fn hold_exit_while_testing() {
        HANDED.with(|h| {
            if h.get() <= PROMOTE_AFTER {
                h.set(PROMOTE_AFTER + 1);
                unsafe {
                    __cxa_thread_atexit_impl(
                        exit_hook,
                        std::ptr::null_mut(),
                        &DSO_ANCHOR as *const u8 as *mut std::ffi::c_void,
                    );
                }
            }
        });
    }

    struct Slot {
        work: *mut (dyn FnMut() + 'static),
        done: AtomicBool,
        waiter: Thread,
    }

    struct SlotPtr(*const Slot);
    unsafe impl Send for SlotPtr {}

    struct Completer {
        pid: i32,
        queue: Mutex<VecDeque<SlotPtr>>,
        thread: Thread,
    }

    static COMPLETER: Mutex<Option<&'static Completer>> = Mutex::new(None);
    /// Number of completions run on the completion thread (tests, benchmarks).
    pub static HANDOFFS: AtomicU64 = AtomicU64::new(0);

    fn completer() -> &'static Completer {
        let mut g = COMPLETER.lock().unwrap_or_else(|e| e.into_inner());
        let pid = unsafe { libc_getpid() };
        if let Some(c) = *g {
            if c.pid == pid {
                return c;
            }
            // A forked child: the parent's thread does not exist here.
        }
        let (tx, rx) = std::sync::mpsc::channel::<&'static Completer>();
        let t = thread::Builder::new()
            .name("mlbuild-lg-complete".into())
            .spawn(move || {
                let _d = DirectScope::enter();
                let me: &'static Completer = rx.recv().expect("completer handle");
                loop {
                    let batch: Vec<SlotPtr> = {
                        let mut q = me.queue.lock().unwrap_or_else(|e| e.into_inner());
                        q.drain(..).collect()
                    };
                    if batch.is_empty() {
                        thread::park();
                        continue;
                    }
                    for SlotPtr(p) in batch {
                        // SAFETY: the caller waits (run_on_completer) until `done`
                        // is set, so the slot and the closure outlive this use.
                        let slot = unsafe { &*p };
                        let waiter = slot.waiter.clone();
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe { (*slot.work)() }));
                        slot.done.store(true, Ordering::Release);
                        waiter.unpark();
                    }
                }
            })
            .expect("spawn the completion thread");
        let c: &'static Completer =
            Box::leak(Box::new(Completer { pid, queue: Mutex::new(VecDeque::new()), thread: t.thread().clone() }));
        tx.send(c).expect("completer start");
        *g = Some(c);
        c
    }

    /// Runs `work` on the completion thread and waits for it.
    pub fn run_on_completer(work: &mut dyn FnMut()) {
        let c = completer();
        // SAFETY: lifetime erased; this function does not return before the
        // completion thread has finished with `work` (it waits for `done`).
        let work: *mut (dyn FnMut() + '_) = work;
        let work: *mut (dyn FnMut() + 'static) = unsafe { std::mem::transmute(work) };
        let slot = Slot { work, done: AtomicBool::new(false), waiter: thread::current() };
        c.queue.lock().unwrap_or_else(|e| e.into_inner()).push_back(SlotPtr(&slot));
        c.thread.unpark();
        HANDOFFS.fetch_add(1, Ordering::Relaxed);
        let mut spins = 0u32;
        while !slot.done.load(Ordering::Acquire) {
            if spins < 200 {
                spins += 1;
                std::hint::spin_loop();
            } else {
                thread::park();
            }
        }
    }
}
