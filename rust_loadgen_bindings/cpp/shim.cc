// mlbuild-loadgen: a thin C++ shim over the official LoadGen C++ API.
// SystemUnderTest / QuerySampleLibrary subclasses whose virtuals forward to
// Rust through C function pointers, plus C entry points that never let a C++
// exception escape into Rust.

#include "shim.h"

#include <cstddef>
#include <cstring>
#include <exception>
#include <string>
#include <type_traits>
#include <vector>

#include "loadgen.h"
#include "query_sample.h"
#include "query_sample_library.h"
#include "system_under_test.h"
#include "test_settings.h"
#include "version.h"

// Defined (with external linkage) by the sdist's mlperf_conf.h, which
// test_settings_internal.cc includes.
extern const char* mlperf_conf;

namespace {

static_assert(sizeof(size_t) == 8, "64-bit targets only");
static_assert(sizeof(mlperf::QuerySample) == sizeof(lg_sample), "QuerySample");
static_assert(offsetof(mlperf::QuerySample, id) == offsetof(lg_sample, id), "");
static_assert(offsetof(mlperf::QuerySample, index) ==
                  offsetof(lg_sample, index),
              "");
static_assert(std::is_standard_layout<mlperf::QuerySampleResponse>::value, "");
static_assert(sizeof(mlperf::QuerySampleResponse) == sizeof(lg_response), "");
static_assert(offsetof(mlperf::QuerySampleResponse, id) ==
                  offsetof(lg_response, id),
              "");
static_assert(offsetof(mlperf::QuerySampleResponse, data) ==
                  offsetof(lg_response, data),
              "");
static_assert(offsetof(mlperf::QuerySampleResponse, size) ==
                  offsetof(lg_response, size),
              "");
static_assert(offsetof(mlperf::QuerySampleResponse, n_tokens) ==
                  offsetof(lg_response, n_tokens),
              "");

void copy_err(const char* msg, char* err, size_t errlen) {
  if (err == nullptr || errlen == 0) return;
  std::strncpy(err, msg, errlen - 1);
  err[errlen - 1] = '\0';
}

class ShimSut final : public mlperf::SystemUnderTest {
 public:
  ShimSut(const char* name, void* ctx, lg_issue_fn issue, lg_void_fn flush)
      : name_(name), ctx_(ctx), issue_(issue), flush_(flush) {}
  const std::string& Name() override { return name_; }
  void IssueQuery(const std::vector<mlperf::QuerySample>& samples) override {
    issue_(ctx_, reinterpret_cast<const lg_sample*>(samples.data()),
           samples.size());
  }
  void FlushQueries() override { flush_(ctx_); }
  void SetName(const char* name) { name_ = name; }

 private:
  std::string name_;
  void* ctx_;
  lg_issue_fn issue_;
  lg_void_fn flush_;
};

class ShimQsl final : public mlperf::QuerySampleLibrary {
 public:
  ShimQsl(const char* name, uint64_t total, uint64_t perf, void* ctx,
          lg_index_fn load, lg_index_fn unload)
      : name_(name),
        total_(total),
        perf_(perf),
        ctx_(ctx),
        load_(load),
        unload_(unload) {}
  const std::string& Name() override { return name_; }
  size_t TotalSampleCount() override { return total_; }
  size_t PerformanceSampleCount() override { return perf_; }
  void LoadSamplesToRam(
      const std::vector<mlperf::QuerySampleIndex>& samples) override {
    load_(ctx_, reinterpret_cast<const uint64_t*>(samples.data()),
          samples.size());
  }
  void UnloadSamplesFromRam(
      const std::vector<mlperf::QuerySampleIndex>& samples) override {
    unload_(ctx_, reinterpret_cast<const uint64_t*>(samples.data()),
            samples.size());
  }

 private:
  std::string name_;
  uint64_t total_;
  uint64_t perf_;
  void* ctx_;
  lg_index_fn load_;
  lg_index_fn unload_;
};

mlperf::TestSettings to_cpp(const lg_test_settings& s) {
  mlperf::TestSettings t{};
  t.scenario = static_cast<mlperf::TestScenario>(s.scenario);
  t.mode = static_cast<mlperf::TestMode>(s.mode);
  t.single_stream_expected_latency_ns = s.single_stream_expected_latency_ns;
  t.single_stream_target_latency_percentile =
      s.single_stream_target_latency_percentile;
  t.multi_stream_expected_latency_ns = s.multi_stream_expected_latency_ns;
  t.multi_stream_target_latency_percentile =
      s.multi_stream_target_latency_percentile;
  t.multi_stream_samples_per_query = s.multi_stream_samples_per_query;
  t.server_target_qps = s.server_target_qps;
  t.server_target_latency_ns = s.server_target_latency_ns;
  t.server_target_latency_percentile = s.server_target_latency_percentile;
  t.server_coalesce_queries = s.server_coalesce_queries != 0;
  t.server_find_peak_qps_decimals_of_precision =
      static_cast<int>(s.server_find_peak_qps_decimals_of_precision);
  t.server_find_peak_qps_boundary_step_size =
      s.server_find_peak_qps_boundary_step_size;
  t.server_max_async_queries = s.server_max_async_queries;
  t.server_num_issue_query_threads = s.server_num_issue_query_threads;
  t.offline_expected_qps = s.offline_expected_qps;
  t.sample_concatenate_permutation = s.sample_concatenate_permutation != 0;
  t.min_duration_ms = s.min_duration_ms;
  t.max_duration_ms = s.max_duration_ms;
  t.min_query_count = s.min_query_count;
  t.max_query_count = s.max_query_count;
  t.qsl_rng_seed = s.qsl_rng_seed;
  t.sample_index_rng_seed = s.sample_index_rng_seed;
  t.schedule_rng_seed = s.schedule_rng_seed;
  t.accuracy_log_rng_seed = s.accuracy_log_rng_seed;
  t.accuracy_log_probability = s.accuracy_log_probability;
  t.accuracy_log_sampling_target = s.accuracy_log_sampling_target;
  t.test05 = s.test05 != 0;
  t.test05_qsl_rng_seed = s.test05_qsl_rng_seed;
  t.test05_sample_index_rng_seed = s.test05_sample_index_rng_seed;
  t.test05_schedule_rng_seed = s.test05_schedule_rng_seed;
  t.print_timestamps = s.print_timestamps != 0;
  t.performance_issue_unique = s.performance_issue_unique != 0;
  t.performance_issue_same = s.performance_issue_same != 0;
  t.performance_issue_same_index = s.performance_issue_same_index;
  t.performance_sample_count_override = s.performance_sample_count_override;
  t.accuracy_sample_count_override = s.accuracy_sample_count_override;
  t.use_token_latencies = s.use_token_latencies != 0;
  t.server_ttft_latency = s.server_ttft_latency;
  t.server_tpot_latency = s.server_tpot_latency;
  t.infer_token_latencies = s.infer_token_latencies != 0;
  t.token_latency_scaling_factor = s.token_latency_scaling_factor;
  return t;
}

void from_cpp(const mlperf::TestSettings& t, lg_test_settings* s) {
  s->scenario = static_cast<int64_t>(t.scenario);
  s->mode = static_cast<int64_t>(t.mode);
  s->single_stream_expected_latency_ns = t.single_stream_expected_latency_ns;
  s->single_stream_target_latency_percentile =
      t.single_stream_target_latency_percentile;
  s->multi_stream_expected_latency_ns = t.multi_stream_expected_latency_ns;
  s->multi_stream_target_latency_percentile =
      t.multi_stream_target_latency_percentile;
  s->multi_stream_samples_per_query = t.multi_stream_samples_per_query;
  s->server_target_qps = t.server_target_qps;
  s->server_target_latency_ns = t.server_target_latency_ns;
  s->server_target_latency_percentile = t.server_target_latency_percentile;
  s->server_coalesce_queries = t.server_coalesce_queries ? 1 : 0;
  s->server_find_peak_qps_decimals_of_precision =
      t.server_find_peak_qps_decimals_of_precision;
  s->server_find_peak_qps_boundary_step_size =
      t.server_find_peak_qps_boundary_step_size;
  s->server_max_async_queries = t.server_max_async_queries;
  s->server_num_issue_query_threads = t.server_num_issue_query_threads;
  s->offline_expected_qps = t.offline_expected_qps;
  s->sample_concatenate_permutation = t.sample_concatenate_permutation ? 1 : 0;
  s->min_duration_ms = t.min_duration_ms;
  s->max_duration_ms = t.max_duration_ms;
  s->min_query_count = t.min_query_count;
  s->max_query_count = t.max_query_count;
  s->qsl_rng_seed = t.qsl_rng_seed;
  s->sample_index_rng_seed = t.sample_index_rng_seed;
  s->schedule_rng_seed = t.schedule_rng_seed;
  s->accuracy_log_rng_seed = t.accuracy_log_rng_seed;
  s->accuracy_log_probability = t.accuracy_log_probability;
  s->accuracy_log_sampling_target = t.accuracy_log_sampling_target;
  s->test05 = t.test05 ? 1 : 0;
  s->test05_qsl_rng_seed = t.test05_qsl_rng_seed;
  s->test05_sample_index_rng_seed = t.test05_sample_index_rng_seed;
  s->test05_schedule_rng_seed = t.test05_schedule_rng_seed;
  s->print_timestamps = t.print_timestamps ? 1 : 0;
  s->performance_issue_unique = t.performance_issue_unique ? 1 : 0;
  s->performance_issue_same = t.performance_issue_same ? 1 : 0;
  s->performance_issue_same_index = t.performance_issue_same_index;
  s->performance_sample_count_override = t.performance_sample_count_override;
  s->accuracy_sample_count_override = t.accuracy_sample_count_override;
  s->use_token_latencies = t.use_token_latencies ? 1 : 0;
  s->server_ttft_latency = t.server_ttft_latency;
  s->server_tpot_latency = t.server_tpot_latency;
  s->infer_token_latencies = t.infer_token_latencies ? 1 : 0;
  s->token_latency_scaling_factor = t.token_latency_scaling_factor;
}

mlperf::ResponseCallback make_cb(lg_response_fn cb, void* ctx) {
  if (cb == nullptr) return {};
  return [cb, ctx](mlperf::QuerySampleResponse* r) {
    cb(ctx, reinterpret_cast<lg_response*>(r));
  };
}

}  // namespace

extern "C" {

size_t lg_abi_sizeof(int which) {
  switch (which) {
    case 0:
      return sizeof(lg_sample);
    case 1:
      return sizeof(lg_response);
    case 2:
      return sizeof(lg_test_settings);
    case 3:
      return sizeof(lg_log_settings);
    default:
      return 0;
  }
}

void* lg_sut_new(const char* name, void* ctx, lg_issue_fn issue,
                 lg_void_fn flush) {
  try {
    return new ShimSut(name, ctx, issue, flush);
  } catch (...) {
    return nullptr;
  }
}

void lg_sut_free(void* sut) { delete static_cast<ShimSut*>(sut); }

int lg_sut_set_name(void* sut, const char* name) {
  try {
    static_cast<ShimSut*>(sut)->SetName(name);
    return 0;
  } catch (...) {
    return -1;
  }
}

void* lg_qsl_new(const char* name, uint64_t total, uint64_t performance,
                 void* ctx, lg_index_fn load, lg_index_fn unload) {
  try {
    return new ShimQsl(name, total, performance, ctx, load, unload);
  } catch (...) {
    return nullptr;
  }
}

void lg_qsl_free(void* qsl) { delete static_cast<ShimQsl*>(qsl); }

void lg_test_settings_default(lg_test_settings* out) {
  // Value-initialised, like pybind11's `new TestSettings()`: members without
  // a default initialiser (token_latency_scaling_factor) become 0.
  mlperf::TestSettings t{};
  from_cpp(t, out);
}

void lg_log_settings_default(lg_log_settings* out, char* outdir, char* prefix,
                             char* suffix, size_t cap) {
  mlperf::LogSettings l{};
  copy_err(l.log_output.outdir.c_str(), outdir, cap);
  copy_err(l.log_output.prefix.c_str(), prefix, cap);
  copy_err(l.log_output.suffix.c_str(), suffix, cap);
  out->outdir = outdir;
  out->prefix = prefix;
  out->suffix = suffix;
  out->prefix_with_datetime = l.log_output.prefix_with_datetime;
  out->copy_detail_to_stdout = l.log_output.copy_detail_to_stdout;
  out->copy_summary_to_stdout = l.log_output.copy_summary_to_stdout;
  out->log_mode = static_cast<int64_t>(l.log_mode);
  out->log_mode_async_poll_interval_ms = l.log_mode_async_poll_interval_ms;
  out->enable_trace = l.enable_trace;
}

int lg_from_config(lg_test_settings* settings, const char* path,
                   const char* model, const char* scenario, int conf_type,
                   char* err, size_t errlen) {
  try {
    mlperf::TestSettings t = to_cpp(*settings);
    int rc = t.FromConfig(path, model, scenario, conf_type);
    from_cpp(t, settings);
    return rc;
  } catch (const std::exception& e) {
    copy_err(e.what(), err, errlen);
  } catch (...) {
    copy_err("unknown C++ exception in TestSettings::FromConfig", err, errlen);
  }
  return -100000;
}

int lg_start_test(void* sut, void* qsl, const lg_test_settings* settings,
                  const lg_log_settings* log, const char* audit_config,
                  char* err, size_t errlen) {
  try {
    mlperf::TestSettings t = to_cpp(*settings);
    mlperf::LogSettings l{};
    l.log_output.outdir = log->outdir;
    l.log_output.prefix = log->prefix;
    l.log_output.suffix = log->suffix;
    l.log_output.prefix_with_datetime = log->prefix_with_datetime != 0;
    l.log_output.copy_detail_to_stdout = log->copy_detail_to_stdout != 0;
    l.log_output.copy_summary_to_stdout = log->copy_summary_to_stdout != 0;
    l.log_mode = static_cast<mlperf::LoggingMode>(log->log_mode);
    l.log_mode_async_poll_interval_ms = log->log_mode_async_poll_interval_ms;
    l.enable_trace = log->enable_trace != 0;
    mlperf::StartTest(static_cast<ShimSut*>(sut), static_cast<ShimQsl*>(qsl),
                      t, l, std::string(audit_config));
    return 0;
  } catch (const std::exception& e) {
    copy_err(e.what(), err, errlen);
  } catch (...) {
    copy_err("unknown C++ exception in mlperf::StartTest", err, errlen);
  }
  return -1;
}

int lg_samples_complete(lg_response* responses, size_t n, lg_response_fn cb,
                        void* cb_ctx, char* err, size_t errlen) {
  try {
    mlperf::QuerySamplesComplete(
        reinterpret_cast<mlperf::QuerySampleResponse*>(responses), n,
        make_cb(cb, cb_ctx));
    return 0;
  } catch (const std::exception& e) {
    copy_err(e.what(), err, errlen);
  } catch (...) {
    copy_err("unknown C++ exception in QuerySamplesComplete", err, errlen);
  }
  return -1;
}

int lg_first_token_complete(lg_response* responses, size_t n,
                            lg_response_fn cb, void* cb_ctx, char* err,
                            size_t errlen) {
  try {
    mlperf::FirstTokenComplete(
        reinterpret_cast<mlperf::QuerySampleResponse*>(responses), n,
        make_cb(cb, cb_ctx));
    return 0;
  } catch (const std::exception& e) {
    copy_err(e.what(), err, errlen);
  } catch (...) {
    copy_err("unknown C++ exception in FirstTokenComplete", err, errlen);
  }
  return -1;
}

void lg_register_issue_query_thread(void) {
  try {
    mlperf::RegisterIssueQueryThread();
  } catch (...) {
  }
}

const char* lg_version_string(int which) {
  switch (which) {
    case 0:
      return mlperf::LoadgenVersion().c_str();
    case 1:
      return mlperf::LoadgenGitRevision().c_str();
    case 2:
      return mlperf::LoadgenBuildDateLocal().c_str();
    case 3:
      return mlperf::LoadgenBuildDateUtc().c_str();
    case 4:
      return mlperf::LoadgenGitCommitDate().c_str();
    case 5:
      return mlperf::LoadgenGitStatus().c_str();
    case 6:
      return mlperf::LoadgenGitLog().c_str();
    case 7:
      return mlperf::LoadgenSha1OfFiles().c_str();
    case 8:
      return mlperf_conf;
    default:
      return "";
  }
}

}  // extern "C"
