//! The `mlbuild_loadgen._lg` extension module: the official `mlperf_loadgen`
//! API (same names, same signatures, same defaults) plus batched fast paths.

use std::collections::HashMap;
use std::os::raw::{c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex};
use std::time::{Duration, Instant};

use pyo3::buffer::PyBuffer;
use pyo3::create_exception;
use pyo3::exceptions::{PyBufferError, PyIndexError, PyRuntimeError, PyTypeError, PyValueError, PyWarning};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyList, PySlice, PyTuple};

use crate::conf;
use crate::runtime::{self, CallbackError, CbResult, CompleteError, Response, Sample, TestError};

create_exception!(mlbuild_loadgen, LoadgenError, PyRuntimeError, "Base class of mlbuild_loadgen errors.");
create_exception!(
    mlbuild_loadgen,
    SutCallbackError,
    LoadgenError,
    "A SUT/QSL callback raised; the original exception is __cause__."
);
create_exception!(
    mlbuild_loadgen,
    StallError,
    LoadgenError,
    "The SUT left samples outstanding past the stall timeout."
);
create_exception!(mlbuild_loadgen, ConfigError, PyValueError, "A malformed conf file (strict FromConfig).");
create_exception!(
    mlbuild_loadgen,
    UnknownResponseIdError,
    PyValueError,
    "A response id that the running test did not issue or that was already completed."
);
create_exception!(mlbuild_loadgen, LoadgenConfigWarning, PyWarning, "Problems found in a conf file.");

// ---------------------------------------------------------------------------
// Enums: pybind11-style (repr `<TestScenario.Server: 2>`, `__members__` a
// dict, `TestScenario(2)`, equality only with the same enum type, no
// ordering), like the official module's `py::enum_`.

#[pyclass(module = "mlbuild_loadgen", frozen)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum TestScenario {
    SingleStream = 0,
    MultiStream = 1,
    Server = 2,
    Offline = 3,
}

#[pyclass(module = "mlbuild_loadgen", frozen)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum TestMode {
    SubmissionRun = 0,
    AccuracyOnly = 1,
    PerformanceOnly = 2,
    FindPeakPerformance = 3,
}

#[pyclass(module = "mlbuild_loadgen", frozen)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum LoggingMode {
    AsyncPoll = 0,
    EndOfTestOnly = 1,
    Synchronous = 2,
}

fn py_bool(py: Python<'_>, b: bool) -> PyObject {
    pyo3::types::PyBool::new(py, b).to_owned().into_any().unbind()
}

macro_rules! enum_extras {
    ($t:ident, [$($v:ident),*]) => {
        #[pymethods]
        impl $t {
            /// `TestScenario(2)` (or another member): the member with that value.
            #[new]
            fn py_new(value: &Bound<'_, PyAny>) -> PyResult<$t> {
                if let Ok(m) = value.downcast::<$t>() {
                    return Ok(*m.get());
                }
                let v = strict_index(value, concat!(stringify!($t), "()"))?;
                $t::try_from_i64(v).ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "{} has no member with value {v} (members: {})",
                        stringify!($t),
                        [$(format!("{}={}", stringify!($v), $t::$v as i64)),*].join(", ")
                    ))
                })
            }
            #[getter]
            fn name(&self) -> &'static str {
                match self { $($t::$v => stringify!($v)),* }
            }
            #[getter]
            fn value(&self) -> i64 {
                *self as i64
            }
            #[classattr]
            fn __members__(py: Python<'_>) -> PyResult<Py<PyDict>> {
                let d = PyDict::new(py);
                $( d.set_item(stringify!($v), Py::new(py, $t::$v)?)?; )*
                Ok(d.unbind())
            }
            fn __repr__(&self) -> String {
                format!("<{}.{}: {}>", stringify!($t), self.name(), *self as i64)
            }
            fn __str__(&self) -> String {
                format!("{}.{}", stringify!($t), self.name())
            }
            fn __int__(&self) -> i64 {
                *self as i64
            }
            fn __index__(&self) -> i64 {
                *self as i64
            }
            fn __hash__(&self) -> u64 {
                *self as u64
            }
            fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: pyo3::basic::CompareOp) -> PyObject {
                let py = other.py();
                use pyo3::basic::CompareOp::*;
                match (op, other.downcast::<$t>()) {
                    (Eq, Ok(o)) => py_bool(py, *self == *o.get()),
                    (Ne, Ok(o)) => py_bool(py, *self != *o.get()),
                    (Eq, Err(_)) => py_bool(py, false),
                    (Ne, Err(_)) => py_bool(py, true),
                    _ => py.NotImplemented(),
                }
            }
            fn __getstate__(&self) -> i64 {
                *self as i64
            }
            fn __reduce__(slf: &Bound<'_, Self>) -> PyResult<(PyObject, (i64,))> {
                Ok((slf.as_any().get_type().into_any().unbind(), (*slf.get() as i64,)))
            }
        }
        impl $t {
            fn try_from_i64(v: i64) -> Option<$t> {
                [$($t::$v),*].into_iter().find(|x| *x as i64 == v)
            }
            fn from_i64(v: i64) -> $t {
                $t::try_from_i64(v).unwrap_or([$($t::$v),*][0])
            }
        }
    };
}
enum_extras!(TestScenario, [SingleStream, MultiStream, Server, Offline]);
enum_extras!(TestMode, [SubmissionRun, AccuracyOnly, PerformanceOnly, FindPeakPerformance]);
enum_extras!(LoggingMode, [AsyncPoll, EndOfTestOnly, Synchronous]);

// ---------------------------------------------------------------------------
// Argument conversion with the official module's (pybind11's) rules, so a
// client that works there works here:
// * bool fields accept True/False, None (False), numpy bools and any object
//   whose type implements `__bool__` (int, float, numpy scalars, Decimal);
//   str, list and the like raise TypeError.
// * integer fields accept int (and bool), numpy integers and objects with
//   `__index__`/`__int__` (converted with int()); floats raise TypeError, and so
//   do values out of the field's range (negative for unsigned, too large).
// * float fields accept anything `float()` accepts except strings.

fn type_name(o: &Bound<'_, PyAny>) -> String {
    o.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
}

fn qualified_type_name(o: &Bound<'_, PyAny>) -> String {
    let t = o.get_type();
    let module = t.module().map(|m| m.to_string()).unwrap_or_default();
    format!("{module}.{}", type_name(o))
}

fn has_slot(o: &Bound<'_, PyAny>, slot: c_int) -> bool {
    let tp = o.get_type();
    unsafe { !pyo3::ffi::PyType_GetSlot(tp.as_ptr() as *mut pyo3::ffi::PyTypeObject, slot).is_null() }
}

/// The value as a Python int, pybind11-style: floats rejected, other numbers through int().
fn int_like<'py>(o: &Bound<'py, PyAny>, what: &str) -> PyResult<Bound<'py, pyo3::types::PyInt>> {
    use pyo3::types::PyInt;
    if let Ok(i) = o.downcast::<PyInt>() {
        return Ok(i.clone());
    }
    let prefix = if what.is_empty() { String::new() } else { format!("{what}: ") };
    let wrong = || PyTypeError::new_err(format!("{prefix}expected an int, got {} {}", type_name(o), o.repr().map(|r| r.to_string()).unwrap_or_default()));
    if o.is_instance_of::<PyFloat>() || unsafe { pyo3::ffi::PyNumber_Check(o.as_ptr()) } == 0 {
        return Err(wrong());
    }
    let r = unsafe { pyo3::ffi::PyNumber_Long(o.as_ptr()) };
    if r.is_null() {
        let _ = PyErr::take(o.py());
        return Err(wrong());
    }
    let r = unsafe { Bound::from_owned_ptr(o.py(), r) };
    r.downcast_into::<PyInt>().map_err(|_| wrong())
}

fn int_in_range<T: for<'a> FromPyObject<'a>>(o: &Bound<'_, PyAny>, what: &str, range: &str) -> PyResult<T> {
    let i = int_like(o, what)?;
    let prefix = if what.is_empty() { String::new() } else { format!("{what}: ") };
    i.extract::<T>().map_err(|_| PyTypeError::new_err(format!("{prefix}{i} is out of range ({range})")))
}

/// Enum constructor argument: an int (or bool/numpy int/`__index__` object), never a float or str.
fn strict_index(o: &Bound<'_, PyAny>, what: &str) -> PyResult<i64> {
    use pyo3::types::PyInt;
    let wrong = || PyTypeError::new_err(format!("{what}: expected an int, got {}", type_name(o)));
    if o.is_instance_of::<PyFloat>() || o.downcast::<PyInt>().is_err() && !has_slot(o, pyo3::ffi::Py_nb_index) {
        return Err(wrong());
    }
    int_in_range::<i64>(o, what, "a 64-bit integer")
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Boolish(bool);

impl<'py> FromPyObject<'py> for Boolish {
    fn extract_bound(o: &Bound<'py, PyAny>) -> PyResult<Self> {
        if let Ok(b) = o.downcast::<pyo3::types::PyBool>() {
            return Ok(Boolish(b.is_true()));
        }
        if o.is_none() {
            return Ok(Boolish(false));
        }
        let qn = qualified_type_name(o);
        if qn == "numpy.bool_" || qn == "numpy.bool" || has_slot(o, pyo3::ffi::Py_nb_bool) {
            return Ok(Boolish(o.is_truthy()?));
        }
        Err(PyTypeError::new_err(format!(
            "expected a bool (or None, or a number), got {} {}",
            type_name(o),
            o.repr().map(|r| r.to_string()).unwrap_or_default()
        )))
    }
}

impl<'py> IntoPyObject<'py> for Boolish {
    type Target = pyo3::types::PyBool;
    type Output = Borrowed<'py, 'py, pyo3::types::PyBool>;
    type Error = std::convert::Infallible;
    fn into_pyobject(self, py: Python<'py>) -> Result<Self::Output, Self::Error> {
        Ok(pyo3::types::PyBool::new(py, self.0))
    }
}

macro_rules! int_arg {
    ($name:ident, $t:ty, $range:expr) => {
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub struct $name($t);
        impl<'py> FromPyObject<'py> for $name {
            fn extract_bound(o: &Bound<'py, PyAny>) -> PyResult<Self> {
                int_in_range::<$t>(o, "", $range).map($name)
            }
        }
        impl<'py> IntoPyObject<'py> for $name {
            type Target = pyo3::types::PyInt;
            type Output = Bound<'py, pyo3::types::PyInt>;
            type Error = std::convert::Infallible;
            fn into_pyobject(self, py: Python<'py>) -> Result<Self::Output, Self::Error> {
                self.0.into_pyobject(py)
            }
        }
    };
}
int_arg!(U64Arg, u64, "0 <= value < 2**64");
int_arg!(I64Arg, i64, "-2**63 <= value < 2**63");
int_arg!(I32Arg, i32, "-2**31 <= value < 2**31");
int_arg!(Handle, usize, "a handle: 0 <= value < 2**64");

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct F64Arg(f64);

impl<'py> FromPyObject<'py> for F64Arg {
    fn extract_bound(o: &Bound<'py, PyAny>) -> PyResult<Self> {
        if let Ok(f) = o.downcast::<PyFloat>() {
            return Ok(F64Arg(f.value()));
        }
        let wrong = || PyTypeError::new_err(format!("expected a float, got {} {}", type_name(o), o.repr().map(|r| r.to_string()).unwrap_or_default()));
        if !(has_slot(o, pyo3::ffi::Py_nb_float) || has_slot(o, pyo3::ffi::Py_nb_index)) {
            return Err(wrong());
        }
        let r = unsafe { pyo3::ffi::PyNumber_Float(o.as_ptr()) };
        if r.is_null() {
            let _ = PyErr::take(o.py());
            return Err(wrong());
        }
        let r = unsafe { Bound::from_owned_ptr(o.py(), r) };
        r.extract::<f64>().map(F64Arg).map_err(|_| wrong())
    }
}

impl<'py> IntoPyObject<'py> for F64Arg {
    type Target = PyFloat;
    type Output = Bound<'py, PyFloat>;
    type Error = std::convert::Infallible;
    fn into_pyobject(self, py: Python<'py>) -> Result<Self::Output, Self::Error> {
        Ok(PyFloat::new(py, self.0))
    }
}

// ---------------------------------------------------------------------------
// TestSettings

macro_rules! test_settings {
    ($( $field:ident : $ty:ty => $raw:ident ),* $(,)?) => {
        #[pyclass(module = "mlbuild_loadgen")]
        #[derive(Clone)]
        pub struct TestSettings {
            #[pyo3(get, set)]
            scenario: TestScenario,
            #[pyo3(get, set)]
            mode: TestMode,
            $( #[pyo3(get, set)] $field: $ty, )*
        }

        impl TestSettings {
            fn to_raw(&self) -> runtime::TestSettings {
                let mut r = runtime::TestSettings::core_default();
                r.scenario = self.scenario as i64;
                r.mode = self.mode as i64;
                $( r.$raw = ConvRaw::to_raw(self.$field); )*
                r
            }
            fn from_raw(r: &runtime::TestSettings) -> Self {
                TestSettings {
                    scenario: TestScenario::from_i64(r.scenario),
                    mode: TestMode::from_i64(r.mode),
                    $( $field: ConvRaw::from_raw(r.$raw), )*
                }
            }
            fn field_names() -> Vec<&'static str> {
                vec!["scenario", "mode", $( stringify!($field) ),*]
            }
        }
    };
}

trait ConvRaw<R>: Sized {
    fn to_raw(self) -> R;
    fn from_raw(r: R) -> Self;
}
impl ConvRaw<f64> for F64Arg {
    fn to_raw(self) -> f64 {
        self.0
    }
    fn from_raw(r: f64) -> Self {
        F64Arg(r)
    }
}
impl ConvRaw<u64> for U64Arg {
    fn to_raw(self) -> u64 {
        self.0
    }
    fn from_raw(r: u64) -> Self {
        U64Arg(r)
    }
}
impl ConvRaw<u64> for Boolish {
    fn to_raw(self) -> u64 {
        self.0 as u64
    }
    fn from_raw(r: u64) -> Self {
        Boolish(r != 0)
    }
}
impl ConvRaw<i64> for I32Arg {
    fn to_raw(self) -> i64 {
        self.0 as i64
    }
    fn from_raw(r: i64) -> Self {
        I32Arg(r as i32)
    }
}

test_settings! {
    single_stream_expected_latency_ns: F64Arg => single_stream_expected_latency_ns,
    single_stream_target_latency_percentile: F64Arg => single_stream_target_latency_percentile,
    multi_stream_expected_latency_ns: F64Arg => multi_stream_expected_latency_ns,
    multi_stream_target_latency_percentile: F64Arg => multi_stream_target_latency_percentile,
    multi_stream_samples_per_query: U64Arg => multi_stream_samples_per_query,
    server_target_qps: F64Arg => server_target_qps,
    server_target_latency_ns: U64Arg => server_target_latency_ns,
    server_target_latency_percentile: F64Arg => server_target_latency_percentile,
    server_coalesce_queries: Boolish => server_coalesce_queries,
    server_find_peak_qps_decimals_of_precision: I32Arg => server_find_peak_qps_decimals_of_precision,
    server_find_peak_qps_boundary_step_size: F64Arg => server_find_peak_qps_boundary_step_size,
    server_max_async_queries: U64Arg => server_max_async_queries,
    server_num_issue_query_threads: U64Arg => server_num_issue_query_threads,
    offline_expected_qps: F64Arg => offline_expected_qps,
    sample_concatenate_permutation: Boolish => sample_concatenate_permutation,
    min_duration_ms: U64Arg => min_duration_ms,
    max_duration_ms: U64Arg => max_duration_ms,
    min_query_count: U64Arg => min_query_count,
    max_query_count: U64Arg => max_query_count,
    qsl_rng_seed: U64Arg => qsl_rng_seed,
    sample_index_rng_seed: U64Arg => sample_index_rng_seed,
    schedule_rng_seed: U64Arg => schedule_rng_seed,
    accuracy_log_rng_seed: U64Arg => accuracy_log_rng_seed,
    accuracy_log_probability: F64Arg => accuracy_log_probability,
    accuracy_log_sampling_target: U64Arg => accuracy_log_sampling_target,
    test05: Boolish => test05,
    test05_qsl_rng_seed: U64Arg => test05_qsl_rng_seed,
    test05_sample_index_rng_seed: U64Arg => test05_sample_index_rng_seed,
    test05_schedule_rng_seed: U64Arg => test05_schedule_rng_seed,
    print_timestamps: Boolish => print_timestamps,
    performance_issue_unique: Boolish => performance_issue_unique,
    performance_issue_same: Boolish => performance_issue_same,
    performance_issue_same_index: U64Arg => performance_issue_same_index,
    performance_sample_count_override: U64Arg => performance_sample_count_override,
    accuracy_sample_count_override: U64Arg => accuracy_sample_count_override,
    use_token_latencies: Boolish => use_token_latencies,
    ttft_latency: U64Arg => server_ttft_latency,
    tpot_latency: U64Arg => server_tpot_latency,
    infer_token_latencies: Boolish => infer_token_latencies,
    token_latency_scaling_factor: U64Arg => token_latency_scaling_factor,
}

fn warn(py: Python<'_>, msg: &str) -> PyResult<()> {
    let cat = py.get_type::<LoadgenConfigWarning>();
    let msg = std::ffi::CString::new(msg.replace('\0', "")).unwrap();
    PyErr::warn(py, &cat, &msg, 2)
}

#[pymethods]
impl TestSettings {
    #[new]
    fn new() -> Self {
        TestSettings::from_raw(&runtime::TestSettings::core_default())
    }

    /// `TestSettings::FromConfig` of the core: returns its status (0 = OK,
    /// -ENOENT, -EINVAL) like the official binding. Problems found in the
    /// file (the core's own messages, and keys it silently ignores) are
    /// issued as `LoadgenConfigWarning`s; with `strict=True` they raise
    /// `ConfigError` instead (settings are left unchanged in that case).
    #[pyo3(name = "FromConfig", signature = (path, model, scenario, conf_type = 1, *, strict = false))]
    fn from_config(
        &mut self,
        py: Python<'_>,
        path: &str,
        model: &str,
        scenario: &str,
        conf_type: i32,
        strict: bool,
    ) -> PyResult<i32> {
        let mut problems: Vec<String> = Vec::new();
        if conf_type != 0 {
            match std::fs::read(path) {
                Ok(bytes) => {
                    let text = String::from_utf8_lossy(&bytes);
                    problems.extend(conf::check(&text).into_iter().map(|p| format!("{path}: {}", p.message)));
                }
                Err(_) => problems.push(format!("can't open file {path}")),
            }
        }
        if strict && !problems.is_empty() {
            return Err(ConfigError::new_err(problems.join("\n")));
        }
        let mut raw = self.to_raw();
        let rc = py
            .allow_threads(|| raw.from_config(path, model, scenario, conf_type))
            .map_err(|e| LoadgenError::new_err(e))?;
        *self = TestSettings::from_raw(&raw);
        for p in &problems {
            warn(py, p)?;
        }
        if rc != 0 && problems.is_empty() {
            warn(py, &format!("FromConfig({path}) returned {rc}"))?;
        }
        Ok(rc)
    }

    /// Checks the settings the way StartTest will (ValueError if invalid).
    fn validate(&self) -> PyResult<()> {
        self.to_raw().validate().map_err(PyValueError::new_err)
    }

    fn __repr__(&self) -> String {
        format!("<mlbuild_loadgen.TestSettings scenario={:?} mode={:?}>", self.scenario, self.mode)
    }

    fn __copy__(&self) -> Self {
        self.clone()
    }

    fn __deepcopy__(&self, _memo: &Bound<'_, PyAny>) -> Self {
        self.clone()
    }

    #[staticmethod]
    fn _fields() -> Vec<&'static str> {
        TestSettings::field_names()
    }
}

// ---------------------------------------------------------------------------
// Log settings

#[pyclass(module = "mlbuild_loadgen")]
#[derive(Clone)]
pub struct LogOutputSettings {
    #[pyo3(get, set)]
    outdir: String,
    #[pyo3(get, set)]
    prefix: String,
    #[pyo3(get, set)]
    suffix: String,
    #[pyo3(get, set)]
    prefix_with_datetime: Boolish,
    #[pyo3(get, set)]
    copy_detail_to_stdout: Boolish,
    #[pyo3(get, set)]
    copy_summary_to_stdout: Boolish,
}

#[pymethods]
impl LogOutputSettings {
    #[new]
    fn new() -> Self {
        let d = runtime::LogSettings::default();
        LogOutputSettings {
            outdir: d.outdir,
            prefix: d.prefix,
            suffix: d.suffix,
            prefix_with_datetime: Boolish(d.prefix_with_datetime),
            copy_detail_to_stdout: Boolish(d.copy_detail_to_stdout),
            copy_summary_to_stdout: Boolish(d.copy_summary_to_stdout),
        }
    }
}

#[pyclass(module = "mlbuild_loadgen")]
pub struct LogSettings {
    log_output: Py<LogOutputSettings>,
    #[pyo3(get, set)]
    log_mode: LoggingMode,
    #[pyo3(get, set)]
    log_mode_async_poll_interval_ms: U64Arg,
    #[pyo3(get, set)]
    enable_trace: Boolish,
}

#[pymethods]
impl LogSettings {
    #[new]
    fn new(py: Python<'_>) -> PyResult<Self> {
        let d = runtime::LogSettings::default();
        Ok(LogSettings {
            log_output: Py::new(py, LogOutputSettings::new())?,
            log_mode: LoggingMode::from_i64(d.log_mode),
            log_mode_async_poll_interval_ms: U64Arg(d.log_mode_async_poll_interval_ms),
            enable_trace: Boolish(d.enable_trace),
        })
    }
    /// Returns the live sub-object (so `ls.log_output.outdir = ...` works);
    /// assignment copies, like the official binding.
    #[getter]
    fn get_log_output(&self, py: Python<'_>) -> Py<LogOutputSettings> {
        self.log_output.clone_ref(py)
    }
    #[setter]
    fn set_log_output(&mut self, py: Python<'_>, v: PyRef<'_, LogOutputSettings>) -> PyResult<()> {
        self.log_output = Py::new(py, (*v).clone())?;
        Ok(())
    }
}

impl LogSettings {
    fn to_runtime(&self, py: Python<'_>) -> runtime::LogSettings {
        let o = self.log_output.borrow(py);
        runtime::LogSettings {
            outdir: o.outdir.clone(),
            prefix: o.prefix.clone(),
            suffix: o.suffix.clone(),
            prefix_with_datetime: o.prefix_with_datetime.0,
            copy_detail_to_stdout: o.copy_detail_to_stdout.0,
            copy_summary_to_stdout: o.copy_summary_to_stdout.0,
            log_mode: self.log_mode as i64,
            log_mode_async_poll_interval_ms: self.log_mode_async_poll_interval_ms.0,
            enable_trace: self.enable_trace.0,
        }
    }
}

// ---------------------------------------------------------------------------
// QuerySample / QuerySampleResponse

#[pyclass(module = "mlbuild_loadgen")]
#[derive(Clone)]
pub struct QuerySample {
    #[pyo3(get, set)]
    id: U64Arg,
    #[pyo3(get, set)]
    index: U64Arg,
}

#[pymethods]
impl QuerySample {
    #[new]
    #[pyo3(signature = (id = U64Arg(0), index = U64Arg(0)))]
    fn new(id: U64Arg, index: U64Arg) -> Self {
        QuerySample { id, index }
    }
    fn __reduce__(slf: &Bound<'_, Self>) -> PyResult<(PyObject, (u64, u64))> {
        let b = slf.borrow();
        Ok((slf.get_type().into_any().unbind(), (b.id.0, b.index.0)))
    }
    fn __repr__(&self) -> String {
        format!("QuerySample(id={}, index={})", self.id.0, self.index.0)
    }
}

#[pyclass(module = "mlbuild_loadgen")]
#[derive(Clone)]
pub struct QuerySampleResponse {
    #[pyo3(get, set)]
    id: U64Arg,
    #[pyo3(get, set)]
    data: U64Arg,
    #[pyo3(get, set)]
    size: U64Arg,
    #[pyo3(get, set)]
    n_tokens: I64Arg,
}

#[pymethods]
impl QuerySampleResponse {
    #[new]
    #[pyo3(signature = (id = U64Arg(0), data = U64Arg(0), size = U64Arg(0), n_tokens = I64Arg(0)))]
    fn new(id: U64Arg, data: U64Arg, size: U64Arg, n_tokens: I64Arg) -> Self {
        QuerySampleResponse { id, data, size, n_tokens }
    }
    fn __reduce__(slf: &Bound<'_, Self>) -> PyResult<(PyObject, (u64, u64, u64, i64))> {
        let b = slf.borrow();
        Ok((slf.get_type().into_any().unbind(), (b.id.0, b.data.0, b.size.0, b.n_tokens.0)))
    }
    fn __repr__(&self) -> String {
        format!(
            "QuerySampleResponse(id={}, data={}, size={}, n_tokens={})",
            self.id.0, self.data.0, self.size.0, self.n_tokens.0
        )
    }
}

// ---------------------------------------------------------------------------
// U64Array: a read-only uint64 vector exposing the buffer protocol
// (np.asarray / np.frombuffer / memoryview are zero-copy).

#[pyclass(module = "mlbuild_loadgen", frozen, sequence)]
pub struct U64Array {
    data: Vec<u64>,
    shape: [isize; 1],
    strides: [isize; 1],
}

impl U64Array {
    fn new(data: Vec<u64>) -> Self {
        let n = data.len() as isize;
        U64Array { data, shape: [n], strides: [8] }
    }
}

#[pymethods]
impl U64Array {
    fn __len__(&self) -> usize {
        self.data.len()
    }
    fn __getitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<PyObject> {
        if let Ok(slice) = key.downcast::<PySlice>() {
            let ind = slice.indices(self.data.len() as isize)?;
            let mut out = Vec::with_capacity(ind.slicelength);
            let mut i = ind.start;
            for _ in 0..ind.slicelength {
                out.push(self.data[i as usize]);
                i += ind.step;
            }
            return Ok(PyList::new(py, out)?.into_any().unbind());
        }
        let mut i: isize = key.extract()?;
        if i < 0 {
            i += self.data.len() as isize;
        }
        if i < 0 || i as usize >= self.data.len() {
            return Err(PyIndexError::new_err("U64Array index out of range"));
        }
        Ok(self.data[i as usize].into_pyobject(py)?.into_any().unbind())
    }
    fn tolist(&self) -> Vec<u64> {
        self.data.clone()
    }
    fn __iter__(&self, py: Python<'_>) -> PyResult<PyObject> {
        let l = PyList::new(py, &self.data)?;
        Ok(l.try_iter()?.into_any().unbind())
    }
    fn __repr__(&self) -> String {
        if self.data.len() <= 8 {
            format!("U64Array({:?})", self.data)
        } else {
            format!("U64Array(len={}, [{}, {}, ..., {}])", self.data.len(), self.data[0], self.data[1], self.data[self.data.len() - 1])
        }
    }
    unsafe fn __getbuffer__(slf: Bound<'_, Self>, view: *mut pyo3::ffi::Py_buffer, flags: c_int) -> PyResult<()> {
        if view.is_null() {
            return Err(PyBufferError::new_err("View is null"));
        }
        if (flags & pyo3::ffi::PyBUF_WRITABLE) == pyo3::ffi::PyBUF_WRITABLE {
            return Err(PyBufferError::new_err("U64Array is read-only"));
        }
        let this = slf.get();
        (*view).buf = this.data.as_ptr() as *mut c_void;
        (*view).len = (this.data.len() * 8) as isize;
        (*view).readonly = 1;
        (*view).itemsize = 8;
        (*view).format = if (flags & pyo3::ffi::PyBUF_FORMAT) == pyo3::ffi::PyBUF_FORMAT {
            c"Q".as_ptr() as *mut _
        } else {
            std::ptr::null_mut()
        };
        (*view).ndim = 1;
        (*view).shape = if (flags & pyo3::ffi::PyBUF_ND) == pyo3::ffi::PyBUF_ND {
            this.shape.as_ptr() as *mut isize
        } else {
            std::ptr::null_mut()
        };
        (*view).strides = if (flags & pyo3::ffi::PyBUF_STRIDES) == pyo3::ffi::PyBUF_STRIDES {
            this.strides.as_ptr() as *mut isize
        } else {
            std::ptr::null_mut()
        };
        (*view).suboffsets = std::ptr::null_mut();
        (*view).internal = std::ptr::null_mut();
        (*view).obj = slf.into_any().into_ptr();
        Ok(())
    }
    unsafe fn __releasebuffer__(&self, _view: *mut pyo3::ffi::Py_buffer) {}
}

/// uint64 values from a U64Array (no copy), any buffer of 8-byte integers,
/// or a sequence of ints.
fn with_u64s<R>(obj: &Bound<'_, PyAny>, f: impl FnOnce(&[u64]) -> R) -> PyResult<R> {
    if let Ok(a) = obj.downcast::<U64Array>() {
        return Ok(f(&a.get().data));
    }
    if let Ok(buf) = PyBuffer::<u64>::get(obj) {
        if let Some(s) = buf.as_slice(obj.py()) {
            // ReadOnlyCell<u64> is a transparent wrapper over u64.
            let p = s.as_ptr() as *const u64;
            let v = unsafe { std::slice::from_raw_parts(p, s.len()) };
            return Ok(f(v));
        }
        return Ok(f(&buf.to_vec(obj.py())?));
    }
    if let Ok(buf) = PyBuffer::<i64>::get(obj) {
        let v: Vec<u64> = buf.to_vec(obj.py())?.into_iter().map(|x| x as u64).collect();
        return Ok(f(&v));
    }
    let v: Vec<u64> = obj.extract().map_err(|_| {
        PyTypeError::new_err("expected a U64Array, a buffer of 8-byte integers (e.g. numpy uint64), or a sequence of ints")
    })?;
    Ok(f(&v))
}

// ---------------------------------------------------------------------------
// Callback plumbing

fn py_error(py: Python<'_>, e: PyErr) -> CallbackError {
    let msg = match e.value(py).str() {
        Ok(s) => format!("{}: {}", e.get_type(py).name().map(|n| n.to_string()).unwrap_or_default(), s),
        Err(_) => "Python exception".to_string(),
    };
    CallbackError::with_payload(msg, Box::new(e))
}

fn call(cb: &PyObject, args: impl for<'py> FnOnce(Python<'py>) -> PyResult<Bound<'py, PyTuple>>) -> CbResult {
    Python::with_gil(|py| {
        let r = args(py).and_then(|a| cb.call1(py, a));
        r.map(|_| ()).map_err(|e| py_error(py, e))
    })
}

enum IssueKind {
    List,
    Fast,
    Arrays,
}

struct PySut {
    kind: IssueKind,
    issue: PyObject,
    flush: Option<PyObject>,
}

impl runtime::SutHandler for PySut {
    fn issue(&self, samples: &[Sample]) -> CbResult {
        match self.kind {
            IssueKind::Arrays => {
                let ids: Vec<u64> = samples.iter().map(|s| s.id).collect();
                let idx: Vec<u64> = samples.iter().map(|s| s.index).collect();
                // The callback may complete the query by its return value:
                // True -> empty responses; a bytes-like object of n*k bytes ->
                // sample i gets bytes [i*k, (i+1)*k). Completion then runs
                // after the GIL is released, saving a Python->Rust call.
                let ret: Result<Option<(Option<PyBuffer<u8>>, usize)>, CallbackError> = Python::with_gil(|py| {
                    let r = (|| -> PyResult<Option<(Option<PyBuffer<u8>>, usize)>> {
                        let args = PyTuple::new(py, [Py::new(py, U64Array::new(ids))?, Py::new(py, U64Array::new(idx))?])?;
                        let out = self.issue.bind(py).call1(args)?;
                        if out.is_none() || out.is(&*pyo3::types::PyBool::new(py, false)) {
                            return Ok(None);
                        }
                        if out.is(&*pyo3::types::PyBool::new(py, true)) {
                            return Ok(Some((None, 0)));
                        }
                        let buf = PyBuffer::<u8>::get(&out).map_err(|_| {
                            PyTypeError::new_err("issue_arrays_cb must return None, True, or a bytes-like object")
                        })?;
                        let n = samples.len().max(1);
                        if !buf.is_c_contiguous() || buf.len_bytes() % n != 0 {
                            return Err(PyValueError::new_err(format!(
                                "issue_arrays_cb returned {} bytes for {} samples; need a contiguous multiple",
                                buf.len_bytes(),
                                samples.len()
                            )));
                        }
                        let k = buf.len_bytes() / n;
                        Ok(Some((Some(buf), k)))
                    })();
                    r.map_err(|e| py_error(py, e))
                });
                match ret? {
                    None => Ok(()),
                    Some((buf, k)) => {
                        let base = buf.as_ref().map(|b| b.buf_ptr() as u64).unwrap_or(0);
                        let mut resps: Vec<Response> = samples
                            .iter()
                            .enumerate()
                            .map(|(i, s)| Response { id: s.id, data: if k > 0 { base + (i * k) as u64 } else { 0 }, size: k as u64, n_tokens: 0 })
                            .collect();
                        let r = runtime::complete(&mut resps, None).map_err(|e| CallbackError::new(e.to_string()));
                        drop(buf);
                        r
                    }
                }
            }
            IssueKind::Fast => call(&self.issue, |py| {
                let ids = PyList::new(py, samples.iter().map(|s| s.id))?;
                let idx = PyList::new(py, samples.iter().map(|s| s.index))?;
                PyTuple::new(py, [ids.into_any(), idx.into_any()])
            }),
            IssueKind::List => call(&self.issue, |py| {
                let mut v = Vec::with_capacity(samples.len());
                for s in samples {
                    v.push(Py::new(py, QuerySample { id: U64Arg(s.id), index: U64Arg(s.index) })?);
                }
                PyTuple::new(py, [PyList::new(py, v)?])
            }),
        }
    }
    fn flush(&self) -> CbResult {
        match &self.flush {
            Some(f) => call(f, |py| Ok(PyTuple::empty(py))),
            None => Ok(()),
        }
    }
}

/// Pull-mode SUT: IssueQuery only appends to a queue (no GIL on the issue
/// thread); Python worker threads take batches with `PollQueries`.
struct QueueState {
    q: Mutex<(Vec<u64>, Vec<u64>)>,
    cv: Condvar,
    waiting: AtomicUsize,
}

struct QueueSut {
    state: Arc<QueueState>,
    flush: Option<PyObject>,
}

impl runtime::SutHandler for QueueSut {
    fn issue(&self, samples: &[Sample]) -> CbResult {
        {
            let mut g = self.state.q.lock().unwrap_or_else(|e| e.into_inner());
            g.0.extend(samples.iter().map(|s| s.id));
            g.1.extend(samples.iter().map(|s| s.index));
        }
        if self.state.waiting.load(Ordering::Acquire) > 0 {
            self.state.cv.notify_one();
        }
        Ok(())
    }
    fn flush(&self) -> CbResult {
        match &self.flush {
            Some(f) => call(f, |py| Ok(PyTuple::empty(py))),
            None => Ok(()),
        }
    }
}

struct PyQsl {
    load: PyObject,
    unload: PyObject,
}

impl runtime::QslHandler for PyQsl {
    fn load(&self, indices: &[u64]) -> CbResult {
        call(&self.load, |py| PyTuple::new(py, [PyList::new(py, indices)?]))
    }
    fn unload(&self, indices: &[u64]) -> CbResult {
        call(&self.unload, |py| PyTuple::new(py, [PyList::new(py, indices)?]))
    }
}

// ---------------------------------------------------------------------------
// Handles (opaque ints, like the official module)

struct SutEntry {
    sut: Arc<runtime::Sut>,
    queue: Option<Arc<QueueState>>,
    /// ConstructQDL's name callback, asked at StartTest like the official binding.
    name_cb: Option<PyObject>,
}

static SUTS: LazyLock<Mutex<HashMap<usize, SutEntry>>> = LazyLock::new(|| Mutex::new(HashMap::new()));
static QSLS: LazyLock<Mutex<HashMap<usize, Arc<runtime::Qsl>>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

fn add_sut(sut: runtime::Sut, queue: Option<Arc<QueueState>>) -> usize {
    add_sut_named(sut, queue, None)
}

fn add_sut_named(sut: runtime::Sut, queue: Option<Arc<QueueState>>, name_cb: Option<PyObject>) -> usize {
    let sut = Arc::new(sut);
    let h = Arc::as_ptr(&sut) as usize;
    SUTS.lock().unwrap().insert(h, SutEntry { sut, queue, name_cb });
    h
}

/// The name a QDL's name_cb gives now (None for other SUTs). Its exceptions
/// propagate from StartTest before the core starts.
fn qdl_name(py: Python<'_>, h: usize) -> PyResult<Option<String>> {
    let cb = SUTS.lock().unwrap().get(&h).and_then(|e| e.name_cb.as_ref().map(|c| c.clone_ref(py)));
    match cb {
        None => Ok(None),
        Some(cb) => {
            let v = cb.call0(py)?;
            let name: String = v.extract(py).map_err(|_| {
                PyTypeError::new_err(format!(
                    "ConstructQDL name_cb must return a str, got {}",
                    type_name(v.bind(py))
                ))
            })?;
            Ok(Some(name))
        }
    }
}

fn get_sut(h: usize) -> PyResult<Arc<runtime::Sut>> {
    SUTS.lock()
        .unwrap()
        .get(&h)
        .map(|e| e.sut.clone())
        .ok_or_else(|| PyValueError::new_err(format!("unknown SUT handle {h} (not constructed, or destroyed)")))
}

fn get_qsl(h: usize) -> PyResult<Arc<runtime::Qsl>> {
    QSLS.lock()
        .unwrap()
        .get(&h)
        .cloned()
        .ok_or_else(|| PyValueError::new_err(format!("unknown QSL handle {h} (not constructed, or destroyed)")))
}

fn check_callable(name: &str, o: &Bound<'_, PyAny>) -> PyResult<()> {
    if !o.is_callable() {
        return Err(PyTypeError::new_err(format!("{name} must be callable")));
    }
    Ok(())
}

/// Construct the system under test (issue_cb gets a list of QuerySample).
#[pyfunction]
#[pyo3(name = "ConstructSUT", signature = (issue_cb, flush_queries_cb, *, name = "PySUT"))]
fn construct_sut(issue_cb: &Bound<'_, PyAny>, flush_queries_cb: &Bound<'_, PyAny>, name: &str) -> PyResult<usize> {
    check_callable("issue_cb", issue_cb)?;
    check_callable("flush_queries_cb", flush_queries_cb)?;
    let h = PySut { kind: IssueKind::List, issue: issue_cb.clone().unbind(), flush: Some(flush_queries_cb.clone().unbind()) };
    Ok(add_sut(runtime::Sut::new(name, Box::new(h)), None))
}

/// Construct the system under test; issue_cb gets (list of ids, list of indices).
#[pyfunction]
#[pyo3(name = "ConstructFastSUT", signature = (fast_issue_cb, flush_queries_cb, *, name = "PyFastSUT"))]
fn construct_fast_sut(fast_issue_cb: &Bound<'_, PyAny>, flush_queries_cb: &Bound<'_, PyAny>, name: &str) -> PyResult<usize> {
    check_callable("fast_issue_cb", fast_issue_cb)?;
    check_callable("flush_queries_cb", flush_queries_cb)?;
    let h = PySut { kind: IssueKind::Fast, issue: fast_issue_cb.clone().unbind(), flush: Some(flush_queries_cb.clone().unbind()) };
    Ok(add_sut(runtime::Sut::new(name, Box::new(h)), None))
}

/// Batched SUT: one issue_cb(ids: U64Array, indices: U64Array) per IssueQuery.
#[pyfunction]
#[pyo3(name = "ConstructSUTBatched", signature = (issue_arrays_cb, flush_queries_cb = None, *, name = "PySUT"))]
fn construct_sut_batched(
    issue_arrays_cb: &Bound<'_, PyAny>,
    flush_queries_cb: Option<&Bound<'_, PyAny>>,
    name: &str,
) -> PyResult<usize> {
    check_callable("issue_arrays_cb", issue_arrays_cb)?;
    if let Some(f) = flush_queries_cb {
        check_callable("flush_queries_cb", f)?;
    }
    let h = PySut {
        kind: IssueKind::Arrays,
        issue: issue_arrays_cb.clone().unbind(),
        flush: flush_queries_cb.map(|f| f.clone().unbind()),
    };
    Ok(add_sut(runtime::Sut::new(name, Box::new(h)), None))
}

/// Pull-mode SUT: IssueQuery enqueues without touching Python; worker
/// threads take batches with PollQueries(sut, ...).
#[pyfunction]
#[pyo3(name = "ConstructQueueSUT", signature = (flush_queries_cb = None, *, name = "PySUT"))]
fn construct_queue_sut(flush_queries_cb: Option<&Bound<'_, PyAny>>, name: &str) -> PyResult<usize> {
    if let Some(f) = flush_queries_cb {
        check_callable("flush_queries_cb", f)?;
    }
    let state = Arc::new(QueueState { q: Mutex::new((Vec::new(), Vec::new())), cv: Condvar::new(), waiting: AtomicUsize::new(0) });
    let h = QueueSut { state: state.clone(), flush: flush_queries_cb.map(|f| f.clone().unbind()) };
    Ok(add_sut(runtime::Sut::new(name, Box::new(h)), Some(state)))
}

/// Takes up to max_samples (0: all) issued samples from a queue SUT, waiting
/// up to timeout_s for the first one (GIL released). Returns (ids, indices);
/// both empty on timeout.
#[pyfunction]
#[pyo3(name = "PollQueries", signature = (sut, max_samples = 0, timeout_s = 0.01))]
fn poll_queries(py: Python<'_>, sut: Handle, max_samples: usize, timeout_s: f64) -> PyResult<(U64Array, U64Array)> {
    let sut = sut.0;
    let state = SUTS
        .lock()
        .unwrap()
        .get(&sut)
        .and_then(|e| e.queue.clone())
        .ok_or_else(|| PyValueError::new_err(format!("{sut} is not a live ConstructQueueSUT handle")))?;
    let timeout = Duration::from_secs_f64(timeout_s.max(0.0));
    let (ids, idx) = py.allow_threads(move || {
        let deadline = Instant::now() + timeout;
        let mut g = state.q.lock().unwrap_or_else(|e| e.into_inner());
        while g.0.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state.waiting.fetch_add(1, Ordering::AcqRel);
            let (g2, _) = state.cv.wait_timeout(g, deadline - now).unwrap_or_else(|e| e.into_inner());
            state.waiting.fetch_sub(1, Ordering::AcqRel);
            g = g2;
        }
        if max_samples == 0 || max_samples >= g.0.len() {
            (std::mem::take(&mut g.0), std::mem::take(&mut g.1))
        } else {
            let rest_ids = g.0.split_off(max_samples);
            let rest_idx = g.1.split_off(max_samples);
            (std::mem::replace(&mut g.0, rest_ids), std::mem::replace(&mut g.1, rest_idx))
        }
    });
    Ok((U64Array::new(ids), U64Array::new(idx)))
}

/// Construct a query dispatch library (the official network SUT variant).
/// name_cb() is asked at StartTest (not here), like the official binding: a
/// client may set the name's backing attribute after constructing the QDL.
#[pyfunction]
#[pyo3(name = "ConstructQDL")]
fn construct_qdl(
    issue_cb: &Bound<'_, PyAny>,
    flush_queries_cb: &Bound<'_, PyAny>,
    name_cb: &Bound<'_, PyAny>,
) -> PyResult<usize> {
    check_callable("issue_cb", issue_cb)?;
    check_callable("flush_queries_cb", flush_queries_cb)?;
    check_callable("name_cb", name_cb)?;
    let h = PySut { kind: IssueKind::List, issue: issue_cb.clone().unbind(), flush: Some(flush_queries_cb.clone().unbind()) };
    Ok(add_sut_named(runtime::Sut::new("PyQDL", Box::new(h)), None, Some(name_cb.clone().unbind())))
}

/// Destroy the object created by ConstructQDL.
#[pyfunction]
#[pyo3(name = "DestroyQDL")]
fn destroy_qdl(qdl: Handle) -> PyResult<()> {
    destroy_sut_impl(qdl.0)
}

fn destroy_sut_impl(sut: usize) -> PyResult<()> {
    SUTS.lock()
        .unwrap()
        .remove(&sut)
        .map(|_| ())
        .ok_or_else(|| PyValueError::new_err(format!("unknown SUT handle {sut}")))
}

/// Destroy the object created by ConstructSUT (or any of our SUT constructors).
#[pyfunction]
#[pyo3(name = "DestroySUT")]
fn destroy_sut(sut: Handle) -> PyResult<()> {
    destroy_sut_impl(sut.0)
}

/// Destroy the object created by ConstructFastSUT.
#[pyfunction]
#[pyo3(name = "DestroyFastSUT")]
fn destroy_fast_sut(sut: Handle) -> PyResult<()> {
    destroy_sut_impl(sut.0)
}

/// Construct the query sample library.
#[pyfunction]
#[pyo3(name = "ConstructQSL", signature = (total_sample_count, performance_sample_count, load_samples_to_ram_cb, unload_samples_from_ram_cb, *, name = "PyQSL"))]
fn construct_qsl(
    total_sample_count: U64Arg,
    performance_sample_count: U64Arg,
    load_samples_to_ram_cb: &Bound<'_, PyAny>,
    unload_samples_from_ram_cb: &Bound<'_, PyAny>,
    name: &str,
) -> PyResult<usize> {
    check_callable("load_samples_to_ram_cb", load_samples_to_ram_cb)?;
    check_callable("unload_samples_from_ram_cb", unload_samples_from_ram_cb)?;
    let h = PyQsl { load: load_samples_to_ram_cb.clone().unbind(), unload: unload_samples_from_ram_cb.clone().unbind() };
    let qsl = runtime::Qsl::new(name, total_sample_count.0, performance_sample_count.0, Box::new(h)).map_err(PyValueError::new_err)?;
    let qsl = Arc::new(qsl);
    let handle = Arc::as_ptr(&qsl) as usize;
    QSLS.lock().unwrap().insert(handle, qsl);
    Ok(handle)
}

/// Destroy the object created by ConstructQSL.
#[pyfunction]
#[pyo3(name = "DestroyQSL")]
fn destroy_qsl(qsl: Handle) -> PyResult<()> {
    let qsl = qsl.0;
    QSLS.lock()
        .unwrap()
        .remove(&qsl)
        .map(|_| ())
        .ok_or_else(|| PyValueError::new_err(format!("unknown QSL handle {qsl}")))
}

// ---------------------------------------------------------------------------
// Running tests

static STALL_TIMEOUT: Mutex<Option<f64>> = Mutex::new(None);

fn default_stall_timeout() -> Option<f64> {
    if let Some(v) = *STALL_TIMEOUT.lock().unwrap() {
        return Some(v);
    }
    std::env::var("MLBUILD_LOADGEN_STALL_TIMEOUT_S").ok().and_then(|v| v.trim().parse::<f64>().ok())
}

/// Sets the process-wide default stall timeout (seconds; None or <= 0: off).
/// When samples are outstanding and none completes for this long, StartTest
/// completes them with empty responses and raises StallError.
#[pyfunction]
#[pyo3(name = "set_stall_timeout", signature = (seconds))]
fn set_stall_timeout(seconds: Option<f64>) {
    *STALL_TIMEOUT.lock().unwrap() = Some(seconds.unwrap_or(0.0));
}

fn run_test(
    py: Python<'_>,
    sut: usize,
    qsl: usize,
    settings: &TestSettings,
    log: runtime::LogSettings,
    audit: &str,
    stall_timeout_s: Option<f64>,
) -> PyResult<()> {
    let sut_name = qdl_name(py, sut)?;
    let sut = get_sut(sut)?;
    let qsl = get_qsl(qsl)?;
    let raw = settings.to_raw();
    let stall = stall_timeout_s.or_else(default_stall_timeout).filter(|s| *s > 0.0);
    let opts = runtime::RunOptions { stall_timeout: stall.map(Duration::from_secs_f64), sut_name };
    let audit = audit.to_string();
    let r = py.allow_threads(move || runtime::start_test(&sut, &qsl, &raw, &log, &audit, &opts));
    match r {
        Ok(()) => Ok(()),
        Err(TestError::Busy) => Err(LoadgenError::new_err(TestError::Busy.to_string())),
        Err(TestError::InvalidSettings(m)) => Err(PyValueError::new_err(m)),
        Err(e @ TestError::Stalled { .. }) => Err(StallError::new_err(e.to_string())),
        Err(e @ TestError::Core(_)) => Err(LoadgenError::new_err(e.to_string())),
        Err(TestError::Callback { first, more, stage }) => {
            let CallbackError { message, payload } = first;
            let text = TestError::Callback { first: CallbackError::new(message), more, stage }.to_string();
            let err = SutCallbackError::new_err(text);
            if let Some(p) = payload {
                if let Ok(orig) = p.downcast::<PyErr>() {
                    err.set_cause(py, Some(*orig));
                }
            }
            Err(err)
        }
    }
}

/// Run tests on a SUT created by ConstructSUT() with the provided QSL. Uses default log settings.
#[pyfunction]
#[pyo3(name = "StartTest", signature = (sut, qsl, test_settings, audit_config_filename = "audit.config", *, stall_timeout_s = None))]
fn start_test(
    py: Python<'_>,
    sut: Handle,
    qsl: Handle,
    test_settings: PyRef<'_, TestSettings>,
    audit_config_filename: &str,
    stall_timeout_s: Option<f64>,
) -> PyResult<()> {
    let s = (*test_settings).clone();
    drop(test_settings);
    run_test(py, sut.0, qsl.0, &s, runtime::LogSettings::default(), audit_config_filename, stall_timeout_s)
}

/// Run tests on a SUT created by ConstructSUT() with the provided QSL. Accepts custom log settings.
#[pyfunction]
#[pyo3(name = "StartTestWithLogSettings", signature = (sut, qsl, test_settings, log_settings, audit_config_filename = "audit.config", *, stall_timeout_s = None))]
fn start_test_with_log_settings(
    py: Python<'_>,
    sut: Handle,
    qsl: Handle,
    test_settings: PyRef<'_, TestSettings>,
    log_settings: PyRef<'_, LogSettings>,
    audit_config_filename: &str,
    stall_timeout_s: Option<f64>,
) -> PyResult<()> {
    let s = (*test_settings).clone();
    let l = log_settings.to_runtime(py);
    drop(test_settings);
    drop(log_settings);
    run_test(py, sut.0, qsl.0, &s, l, audit_config_filename, stall_timeout_s)
}

/// Registers the calling thread as an issue thread (Server with
/// server_num_issue_query_threads > 0); blocks until the test ends.
#[pyfunction]
#[pyo3(name = "RegisterIssueQueryThread")]
fn register_issue_query_thread(py: Python<'_>) {
    py.allow_threads(runtime::register_issue_query_thread);
}

// ---------------------------------------------------------------------------
// Completions

fn complete_error(e: CompleteError) -> PyErr {
    match e {
        CompleteError::UnknownIds { .. } => UnknownResponseIdError::new_err(e.to_string()),
        CompleteError::NoTest => UnknownResponseIdError::new_err(e.to_string()),
        CompleteError::Core(_) => LoadgenError::new_err(e.to_string()),
    }
}

/// Runs `f` with the GIL released and an optional Python response_cb that
/// the core calls (on this thread) for samples it copies to the accuracy
/// log; the callback may replace data/size before the copy.
fn with_response_cb(
    py: Python<'_>,
    resps: &mut Vec<Response>,
    response_cb: Option<&Bound<'_, PyAny>>,
    f: fn(&mut Vec<Response>, Option<&mut dyn FnMut(&mut Response)>) -> Result<(), CompleteError>,
) -> PyResult<()> {
    match response_cb {
        None => py.allow_threads(|| f(resps, None)).map_err(complete_error),
        Some(cb) => {
            check_callable("response_cb", cb)?;
            let cb = cb.clone().unbind();
            let mut first_err: Option<PyErr> = None;
            let r = py.allow_threads(|| {
                let mut call = |r: &mut Response| {
                    Python::with_gil(|py| {
                        let res = (|| -> PyResult<()> {
                            let obj = Py::new(py, QuerySampleResponse { id: U64Arg(r.id), data: U64Arg(r.data), size: U64Arg(r.size), n_tokens: I64Arg(r.n_tokens) })?;
                            cb.call1(py, (obj.clone_ref(py),))?;
                            let b = obj.borrow(py);
                            r.data = b.data.0;
                            r.size = b.size.0;
                            r.n_tokens = b.n_tokens.0;
                            Ok(())
                        })();
                        if let Err(e) = res {
                            if first_err.is_none() {
                                first_err = Some(e);
                            }
                        }
                    })
                };
                f(resps, Some(&mut call))
            });
            r.map_err(complete_error)?;
            match first_err {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
    }
}

fn responses_from_objects(responses: &Bound<'_, PyAny>) -> PyResult<Vec<Response>> {
    let mut out = Vec::with_capacity(responses.len().unwrap_or(0));
    for item in responses.try_iter()? {
        let item = item?;
        let r = item.downcast::<QuerySampleResponse>().map_err(|_| {
            PyTypeError::new_err(format!(
                "responses must contain QuerySampleResponse objects, got {}",
                item.get_type().name().map(|n| n.to_string()).unwrap_or_default()
            ))
        })?;
        let r = r.borrow();
        out.push(Response { id: r.id.0, data: r.data.0, size: r.size.0, n_tokens: r.n_tokens.0 });
    }
    Ok(out)
}

/// Called by the SUT to indicate that samples from some combination of IssueQuery calls have finished.
#[pyfunction]
#[pyo3(name = "QuerySamplesComplete", signature = (responses, response_cb = None))]
fn query_samples_complete(py: Python<'_>, responses: &Bound<'_, PyAny>, response_cb: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
    let mut resps = responses_from_objects(responses)?;
    with_response_cb(py, &mut resps, response_cb, runtime::complete)
}

/// Called by the SUT to indicate that tokens from some combination of IssueQuery calls have finished.
#[pyfunction]
#[pyo3(name = "FirstTokenComplete", signature = (responses, response_cb = None))]
fn first_token_complete(py: Python<'_>, responses: &Bound<'_, PyAny>, response_cb: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
    let mut resps = responses_from_objects(responses)?;
    with_response_cb(py, &mut resps, response_cb, runtime::first_token_complete)
}

/// Completes len(ids) samples in one call, without a Python object per
/// sample. data_ptrs/sizes/n_tokens: arrays of the same length (default 0).
#[pyfunction]
#[pyo3(name = "QuerySamplesCompleteArrays", signature = (ids, data_ptrs = None, sizes = None, n_tokens = None, response_cb = None))]
fn query_samples_complete_arrays(
    py: Python<'_>,
    ids: &Bound<'_, PyAny>,
    data_ptrs: Option<&Bound<'_, PyAny>>,
    sizes: Option<&Bound<'_, PyAny>>,
    n_tokens: Option<&Bound<'_, PyAny>>,
    response_cb: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let mut resps: Vec<Response> =
        with_u64s(ids, |ids| ids.iter().map(|&id| Response { id, data: 0, size: 0, n_tokens: 0 }).collect())?;
    let n = resps.len();
    let fill = |obj: Option<&Bound<'_, PyAny>>, name: &str, resps: &mut Vec<Response>, set: fn(&mut Response, u64)| -> PyResult<()> {
        if let Some(o) = obj {
            with_u64s(o, |v| {
                if v.len() != n {
                    return Err(PyValueError::new_err(format!("{name} has {} entries, ids has {n}", v.len())));
                }
                for (r, &x) in resps.iter_mut().zip(v) {
                    set(r, x);
                }
                Ok(())
            })??;
        }
        Ok(())
    };
    fill(data_ptrs, "data_ptrs", &mut resps, |r, x| r.data = x)?;
    fill(sizes, "sizes", &mut resps, |r, x| r.size = x)?;
    fill(n_tokens, "n_tokens", &mut resps, |r, x| r.n_tokens = x as i64)?;
    with_response_cb(py, &mut resps, response_cb, runtime::complete)
}

/// Completes len(ids) samples whose responses are consecutive item_size-byte
/// records of one buffer (sample i -> bytes [i*item_size, (i+1)*item_size)).
/// The bytes are copied by the core before this returns.
#[pyfunction]
#[pyo3(name = "QuerySamplesCompleteBuffer", signature = (ids, buffer, item_size, response_cb = None))]
fn query_samples_complete_buffer(
    py: Python<'_>,
    ids: &Bound<'_, PyAny>,
    buffer: &Bound<'_, PyAny>,
    item_size: usize,
    response_cb: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let buf = PyBuffer::<u8>::get(buffer)?;
    if !buf.is_c_contiguous() {
        return Err(PyValueError::new_err("buffer must be C-contiguous"));
    }
    let base = buf.buf_ptr() as u64;
    let total = buf.len_bytes();
    let mut resps: Vec<Response> = with_u64s(ids, |ids| {
        ids.iter()
            .enumerate()
            .map(|(i, &id)| Response { id, data: base + (i * item_size) as u64, size: item_size as u64, n_tokens: 0 })
            .collect()
    })?;
    if resps.len() * item_size > total {
        return Err(PyValueError::new_err(format!(
            "buffer holds {total} bytes, {} samples of {item_size} bytes need {}",
            resps.len(),
            resps.len() * item_size
        )));
    }
    let r = with_response_cb(py, &mut resps, response_cb, runtime::complete);
    drop(buf);
    r
}

// ---------------------------------------------------------------------------
// Introspection

/// Build provenance: LoadGen version and file hashes (as the core logs them),
/// crate, rustc and C++ compiler versions.
#[pyfunction]
fn build_info(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    let v = runtime::loadgen_version();
    let rev = runtime::version_string(1);
    d.set_item("loadgen_version", &v)?;
    d.set_item("loadgen_version_logged", format!("{v} @ {rev}"))?;
    d.set_item("loadgen_git_revision", rev)?;
    d.set_item("loadgen_git_commit_date", runtime::version_string(4))?;
    d.set_item("loadgen_git_status", runtime::version_string(5))?;
    d.set_item("loadgen_build_date_local", runtime::version_string(2))?;
    d.set_item("loadgen_build_date_utc", runtime::version_string(3))?;
    let sha = PyDict::new(py);
    for (path, h) in runtime::file_sha1s() {
        sha.set_item(path, h)?;
    }
    d.set_item("loadgen_file_sha1", sha)?;
    d.set_item("sdist_version", runtime::SDIST_VERSION)?;
    d.set_item("crate_version", runtime::CRATE_VERSION)?;
    d.set_item("rustc_version", runtime::RUSTC_VERSION)?;
    d.set_item("cxx_compiler_version", runtime::CXX_VERSION)?;
    d.set_item("mlperf_conf_bytes", runtime::embedded_mlperf_conf().len())?;
    d.set_item("abi_ok", runtime::abi_ok())?;
    Ok(d)
}

/// Counters of the completion routing (for tests): completions handed to the
/// completion thread, and threads held at exit until a test ended.
#[pyfunction]
fn _completion_stats() -> (u64, u64) {
    (
        runtime::handoff::HANDOFFS.load(Ordering::Relaxed),
        runtime::handoff::HELD_AT_EXIT.load(Ordering::Relaxed),
    )
}

/// The mlperf.conf embedded in the core (the sdist's, byte for byte).
#[pyfunction]
fn embedded_mlperf_conf() -> String {
    runtime::embedded_mlperf_conf()
}

/// Problems in a conf file: the core's own parse errors and ignored keys.
#[pyfunction]
fn check_config(path: &str) -> PyResult<Vec<String>> {
    let text = std::fs::read(path).map_err(|e| ConfigError::new_err(format!("can't open file {path}: {e}")))?;
    Ok(conf::check(&String::from_utf8_lossy(&text)).into_iter().map(|p| p.message).collect())
}

#[pymodule]
fn _lg(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    if !runtime::abi_ok() {
        return Err(PyRuntimeError::new_err("mlbuild_loadgen: C/Rust struct layout mismatch"));
    }
    m.add("__version__", runtime::CRATE_VERSION)?;
    m.add_class::<TestScenario>()?;
    m.add_class::<TestMode>()?;
    m.add_class::<LoggingMode>()?;
    m.add_class::<TestSettings>()?;
    m.add_class::<LogOutputSettings>()?;
    m.add_class::<LogSettings>()?;
    m.add_class::<QuerySample>()?;
    m.add_class::<QuerySampleResponse>()?;
    m.add_class::<U64Array>()?;
    m.add_function(wrap_pyfunction!(construct_sut, m)?)?;
    m.add_function(wrap_pyfunction!(construct_fast_sut, m)?)?;
    m.add_function(wrap_pyfunction!(construct_sut_batched, m)?)?;
    m.add_function(wrap_pyfunction!(construct_queue_sut, m)?)?;
    m.add_function(wrap_pyfunction!(poll_queries, m)?)?;
    m.add_function(wrap_pyfunction!(destroy_sut, m)?)?;
    m.add_function(wrap_pyfunction!(destroy_fast_sut, m)?)?;
    m.add_function(wrap_pyfunction!(construct_qdl, m)?)?;
    m.add_function(wrap_pyfunction!(destroy_qdl, m)?)?;
    m.add_function(wrap_pyfunction!(construct_qsl, m)?)?;
    m.add_function(wrap_pyfunction!(destroy_qsl, m)?)?;
    m.add_function(wrap_pyfunction!(start_test, m)?)?;
    m.add_function(wrap_pyfunction!(start_test_with_log_settings, m)?)?;
    m.add_function(wrap_pyfunction!(register_issue_query_thread, m)?)?;
    m.add_function(wrap_pyfunction!(set_stall_timeout, m)?)?;
    m.add_function(wrap_pyfunction!(query_samples_complete, m)?)?;
    m.add_function(wrap_pyfunction!(first_token_complete, m)?)?;
    m.add_function(wrap_pyfunction!(query_samples_complete_arrays, m)?)?;
    m.add_function(wrap_pyfunction!(query_samples_complete_buffer, m)?)?;
    m.add_function(wrap_pyfunction!(build_info, m)?)?;
    m.add_function(wrap_pyfunction!(embedded_mlperf_conf, m)?)?;
    m.add_function(wrap_pyfunction!(check_config, m)?)?;
    m.add_function(wrap_pyfunction!(_completion_stats, m)?)?;
    m.add("LoadgenError", py.get_type::<LoadgenError>())?;
    m.add("SutCallbackError", py.get_type::<SutCallbackError>())?;
    m.add("StallError", py.get_type::<StallError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("UnknownResponseIdError", py.get_type::<UnknownResponseIdError>())?;
    m.add("LoadgenConfigWarning", py.get_type::<LoadgenConfigWarning>())?;
    Ok(())
}
