// C ABI between the LoadGen C++ core and the Rust layer of mlbuild-loadgen.
// Every struct here uses only 8-byte fields, so the Rust #[repr(C)] mirrors
// (src/ffi.rs) cannot drift in padding; sizes are cross-checked at runtime.
#ifndef MLBUILD_LG_SHIM_H
#define MLBUILD_LG_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  uint64_t id;
  uint64_t index;
} lg_sample;

typedef struct {
  uint64_t id;
  uint64_t data;
  uint64_t size;
  int64_t n_tokens;
} lg_response;

// Mirrors mlperf::TestSettings field for field (bools and enums widened).
typedef struct {
  int64_t scenario;
  int64_t mode;
  double single_stream_expected_latency_ns;
  double single_stream_target_latency_percentile;
  double multi_stream_expected_latency_ns;
  double multi_stream_target_latency_percentile;
  uint64_t multi_stream_samples_per_query;
  double server_target_qps;
  uint64_t server_target_latency_ns;
  double server_target_latency_percentile;
  uint64_t server_coalesce_queries;
  int64_t server_find_peak_qps_decimals_of_precision;
  double server_find_peak_qps_boundary_step_size;
  uint64_t server_max_async_queries;
  uint64_t server_num_issue_query_threads;
  double offline_expected_qps;
  uint64_t sample_concatenate_permutation;
  uint64_t min_duration_ms;
  uint64_t max_duration_ms;
  uint64_t min_query_count;
  uint64_t max_query_count;
  uint64_t qsl_rng_seed;
  uint64_t sample_index_rng_seed;
  uint64_t schedule_rng_seed;
  uint64_t accuracy_log_rng_seed;
  double accuracy_log_probability;
  uint64_t accuracy_log_sampling_target;
  uint64_t test05;
  uint64_t test05_qsl_rng_seed;
  uint64_t test05_sample_index_rng_seed;
  uint64_t test05_schedule_rng_seed;
  uint64_t print_timestamps;
  uint64_t performance_issue_unique;
  uint64_t performance_issue_same;
  uint64_t performance_issue_same_index;
  uint64_t performance_sample_count_override;
  uint64_t accuracy_sample_count_override;
  uint64_t use_token_latencies;
  uint64_t server_ttft_latency;
  uint64_t server_tpot_latency;
  uint64_t infer_token_latencies;
  uint64_t token_latency_scaling_factor;
} lg_test_settings;

typedef struct {
  const char* outdir;
  const char* prefix;
  const char* suffix;
  uint64_t prefix_with_datetime;
  uint64_t copy_detail_to_stdout;
  uint64_t copy_summary_to_stdout;
  int64_t log_mode;
  uint64_t log_mode_async_poll_interval_ms;
  uint64_t enable_trace;
} lg_log_settings;

typedef void (*lg_issue_fn)(void* ctx, const lg_sample* samples, size_t n);
typedef void (*lg_void_fn)(void* ctx);
typedef void (*lg_index_fn)(void* ctx, const uint64_t* indices, size_t n);
typedef void (*lg_response_fn)(void* ctx, lg_response* response);

size_t lg_abi_sizeof(int which);

void* lg_sut_new(const char* name, void* ctx, lg_issue_fn issue,
                 lg_void_fn flush);
void lg_sut_free(void* sut);
/* Replaces the name the core reads with Name() (not while a test runs). */
int lg_sut_set_name(void* sut, const char* name);
void* lg_qsl_new(const char* name, uint64_t total, uint64_t performance,
                 void* ctx, lg_index_fn load, lg_index_fn unload);
void lg_qsl_free(void* qsl);

void lg_test_settings_default(lg_test_settings* out);
void lg_log_settings_default(lg_log_settings* out, char* outdir, char* prefix,
                             char* suffix, size_t cap);
int lg_from_config(lg_test_settings* settings, const char* path,
                   const char* model, const char* scenario, int conf_type,
                   char* err, size_t errlen);

// Returns 0 on success, -1 if the core threw (message copied to err).
int lg_start_test(void* sut, void* qsl, const lg_test_settings* settings,
                  const lg_log_settings* log, const char* audit_config,
                  char* err, size_t errlen);
int lg_samples_complete(lg_response* responses, size_t n, lg_response_fn cb,
                        void* cb_ctx, char* err, size_t errlen);
int lg_first_token_complete(lg_response* responses, size_t n,
                            lg_response_fn cb, void* cb_ctx, char* err,
                            size_t errlen);
void lg_register_issue_query_thread(void);

// 0 version, 1 git revision, 2 build date local, 3 build date utc,
// 4 git commit date, 5 git status, 6 git log, 7 sha1 of files,
// 8 embedded mlperf.conf
const char* lg_version_string(int which);

#ifdef __cplusplus
}
#endif

#endif
