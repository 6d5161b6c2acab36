//! Raw C ABI of the shim (`cpp/shim.h`). Everything here is `unsafe` and
//! mirrors the header exactly; the safe layer is `crate::runtime`.

use std::os::raw::{c_char, c_int, c_void};

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LgSample {
    pub id: u64,
    pub index: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LgResponse {
    pub id: u64,
    pub data: u64,
    pub size: u64,
    pub n_tokens: i64,
}

/// Mirrors `mlperf::TestSettings` (bools and enums widened to 8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LgTestSettings {
    pub scenario: i64,
    pub mode: i64,
    pub single_stream_expected_latency_ns: f64,
    pub single_stream_target_latency_percentile: f64,
    pub multi_stream_expected_latency_ns: f64,
    pub multi_stream_target_latency_percentile: f64,
    pub multi_stream_samples_per_query: u64,
    pub server_target_qps: f64,
    pub server_target_latency_ns: u64,
    pub server_target_latency_percentile: f64,
    pub server_coalesce_queries: u64,
    pub server_find_peak_qps_decimals_of_precision: i64,
    pub server_find_peak_qps_boundary_step_size: f64,
    pub server_max_async_queries: u64,
    pub server_num_issue_query_threads: u64,
    pub offline_expected_qps: f64,
    pub sample_concatenate_permutation: u64,
    pub min_duration_ms: u64,
    pub max_duration_ms: u64,
    pub min_query_count: u64,
    pub max_query_count: u64,
    pub qsl_rng_seed: u64,
    pub sample_index_rng_seed: u64,
    pub schedule_rng_seed: u64,
    pub accuracy_log_rng_seed: u64,
    pub accuracy_log_probability: f64,
    pub accuracy_log_sampling_target: u64,
    pub test05: u64,
    pub test05_qsl_rng_seed: u64,
    pub test05_sample_index_rng_seed: u64,
    pub test05_schedule_rng_seed: u64,
    pub print_timestamps: u64,
    pub performance_issue_unique: u64,
    pub performance_issue_same: u64,
    pub performance_issue_same_index: u64,
    pub performance_sample_count_override: u64,
    pub accuracy_sample_count_override: u64,
    pub use_token_latencies: u64,
    pub server_ttft_latency: u64,
    pub server_tpot_latency: u64,
    pub infer_token_latencies: u64,
    pub token_latency_scaling_factor: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LgLogSettings {
    pub outdir: *const c_char,
    pub prefix: *const c_char,
    pub suffix: *const c_char,
    pub prefix_with_datetime: u64,
    pub copy_detail_to_stdout: u64,
    pub copy_summary_to_stdout: u64,
    pub log_mode: i64,
    pub log_mode_async_poll_interval_ms: u64,
    pub enable_trace: u64,
}

pub type IssueFn = unsafe extern "C" fn(ctx: *mut c_void, samples: *const LgSample, n: usize);
pub type VoidFn = unsafe extern "C" fn(ctx: *mut c_void);
pub type IndexFn = unsafe extern "C" fn(ctx: *mut c_void, indices: *const u64, n: usize);
pub type ResponseFn = unsafe extern "C" fn(ctx: *mut c_void, response: *mut LgResponse);

extern "C" {
    pub fn lg_abi_sizeof(which: c_int) -> usize;
    pub fn lg_sut_new(name: *const c_char, ctx: *mut c_void, issue: IssueFn, flush: VoidFn) -> *mut c_void;
    pub fn lg_sut_free(sut: *mut c_void);
    pub fn lg_sut_set_name(sut: *mut c_void, name: *const c_char) -> c_int;
    pub fn lg_qsl_new(
        name: *const c_char,
        total: u64,
        performance: u64,
        ctx: *mut c_void,
        load: IndexFn,
        unload: IndexFn,
    ) -> *mut c_void;
    pub fn lg_qsl_free(qsl: *mut c_void);
    pub fn lg_test_settings_default(out: *mut LgTestSettings);
    pub fn lg_log_settings_default(
        out: *mut LgLogSettings,
        outdir: *mut c_char,
        prefix: *mut c_char,
        suffix: *mut c_char,
        cap: usize,
    );
    pub fn lg_from_config(
        settings: *mut LgTestSettings,
        path: *const c_char,
        model: *const c_char,
        scenario: *const c_char,
        conf_type: c_int,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    pub fn lg_start_test(
        sut: *mut c_void,
        qsl: *mut c_void,
        settings: *const LgTestSettings,
        log: *const LgLogSettings,
        audit_config: *const c_char,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    pub fn lg_samples_complete(
        responses: *mut LgResponse,
        n: usize,
        cb: Option<ResponseFn>,
        cb_ctx: *mut c_void,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    pub fn lg_first_token_complete(
        responses: *mut LgResponse,
        n: usize,
        cb: Option<ResponseFn>,
        cb_ctx: *mut c_void,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    pub fn lg_register_issue_query_thread();
    pub fn lg_version_string(which: c_int) -> *const c_char;
}
