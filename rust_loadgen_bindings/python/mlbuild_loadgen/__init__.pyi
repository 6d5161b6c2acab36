"""Typed stub of mlbuild_loadgen (the official mlperf_loadgen API plus extras)."""

import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, Protocol, SupportsIndex, final

__all__ = [
    "ConfigError",
    "ConstructFastSUT",
    "ConstructQDL",
    "ConstructQSL",
    "ConstructQueueSUT",
    "ConstructSUT",
    "ConstructSUTBatched",
    "DestroyFastSUT",
    "DestroyQDL",
    "DestroyQSL",
    "DestroySUT",
    "FirstTokenComplete",
    "LoadgenConfigWarning",
    "LoadgenError",
    "LogOutputSettings",
    "LogSettings",
    "LoggingMode",
    "PollQueries",
    "QuerySample",
    "QuerySampleResponse",
    "QuerySamplesComplete",
    "QuerySamplesCompleteArrays",
    "QuerySamplesCompleteBuffer",
    "ROUND_SEEDS",
    "RegisterIssueQueryThread",
    "StallError",
    "StartTest",
    "StartTestWithLogSettings",
    "SutCallbackError",
    "TestMode",
    "TestScenario",
    "TestSettings",
    "U64Array",
    "UnknownResponseIdError",
    "VectorQuerySample",
    "VectorQuerySampleResponse",
    "__version__",
    "apply_round_seeds",
    "build_info",
    "check_config",
    "embedded_mlperf_conf",
    "set_stall_timeout",
]

__version__: str

class _SupportsBool(Protocol):
    def __bool__(self) -> bool: ...

# Bool fields take what the official module (pybind11) takes: bools, None (False), numbers,
# numpy bools, anything with __bool__.
_Boolish = _SupportsBool | None

class _Buffer(Protocol):
    def __buffer__(self, flags: int, /) -> memoryview: ...

_U64s = U64Array | _Buffer | Sequence[int]

@final
class TestScenario:
    SingleStream: ClassVar[TestScenario]
    MultiStream: ClassVar[TestScenario]
    Server: ClassVar[TestScenario]
    Offline: ClassVar[TestScenario]
    __members__: ClassVar[dict[str, TestScenario]]
    def __new__(cls, value: SupportsIndex | TestScenario) -> TestScenario: ...
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...
    def __int__(self) -> int: ...
    def __index__(self) -> int: ...
    def __hash__(self) -> int: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __ne__(self, other: object, /) -> bool: ...
    def __getstate__(self) -> int: ...
    def __reduce__(self) -> tuple[type[TestScenario], tuple[int]]: ...

@final
class TestMode:
    SubmissionRun: ClassVar[TestMode]
    AccuracyOnly: ClassVar[TestMode]
    PerformanceOnly: ClassVar[TestMode]
    FindPeakPerformance: ClassVar[TestMode]
    __members__: ClassVar[dict[str, TestMode]]
    def __new__(cls, value: SupportsIndex | TestMode) -> TestMode: ...
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...
    def __int__(self) -> int: ...
    def __index__(self) -> int: ...
    def __hash__(self) -> int: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __ne__(self, other: object, /) -> bool: ...
    def __getstate__(self) -> int: ...
    def __reduce__(self) -> tuple[type[TestMode], tuple[int]]: ...

@final
class LoggingMode:
    AsyncPoll: ClassVar[LoggingMode]
    EndOfTestOnly: ClassVar[LoggingMode]
    Synchronous: ClassVar[LoggingMode]
    __members__: ClassVar[dict[str, LoggingMode]]
    def __new__(cls, value: SupportsIndex | LoggingMode) -> LoggingMode: ...
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...
    def __int__(self) -> int: ...
    def __index__(self) -> int: ...
    def __hash__(self) -> int: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __ne__(self, other: object, /) -> bool: ...
    def __getstate__(self) -> int: ...
    def __reduce__(self) -> tuple[type[LoggingMode], tuple[int]]: ...

@final
class TestSettings:
    scenario: TestScenario
    mode: TestMode
    single_stream_expected_latency_ns: float
    single_stream_target_latency_percentile: float
    multi_stream_expected_latency_ns: float
    multi_stream_target_latency_percentile: float
    multi_stream_samples_per_query: int
    server_target_qps: float
    server_target_latency_ns: int
    server_target_latency_percentile: float
    @property
    def server_coalesce_queries(self) -> bool: ...
    @server_coalesce_queries.setter
    def server_coalesce_queries(self, value: _Boolish, /) -> None: ...
    server_find_peak_qps_decimals_of_precision: int
    server_find_peak_qps_boundary_step_size: float
    server_max_async_queries: int
    server_num_issue_query_threads: int
    offline_expected_qps: float
    @property
    def sample_concatenate_permutation(self) -> bool: ...
    @sample_concatenate_permutation.setter
    def sample_concatenate_permutation(self, value: _Boolish, /) -> None: ...
    min_duration_ms: int
    max_duration_ms: int
    min_query_count: int
    max_query_count: int
    qsl_rng_seed: int
    sample_index_rng_seed: int
    schedule_rng_seed: int
    accuracy_log_rng_seed: int
    accuracy_log_probability: float
    accuracy_log_sampling_target: int
    @property
    def test05(self) -> bool: ...
    @test05.setter
    def test05(self, value: _Boolish, /) -> None: ...
    test05_qsl_rng_seed: int
    test05_sample_index_rng_seed: int
    test05_schedule_rng_seed: int
    @property
    def print_timestamps(self) -> bool: ...
    @print_timestamps.setter
    def print_timestamps(self, value: _Boolish, /) -> None: ...
    @property
    def performance_issue_unique(self) -> bool: ...
    @performance_issue_unique.setter
    def performance_issue_unique(self, value: _Boolish, /) -> None: ...
    @property
    def performance_issue_same(self) -> bool: ...
    @performance_issue_same.setter
    def performance_issue_same(self, value: _Boolish, /) -> None: ...
    performance_issue_same_index: int
    performance_sample_count_override: int
    accuracy_sample_count_override: int
    @property
    def use_token_latencies(self) -> bool: ...
    @use_token_latencies.setter
    def use_token_latencies(self, value: _Boolish, /) -> None: ...
    ttft_latency: int
    tpot_latency: int
    @property
    def infer_token_latencies(self) -> bool: ...
    @infer_token_latencies.setter
    def infer_token_latencies(self, value: _Boolish, /) -> None: ...
    token_latency_scaling_factor: int
    def __init__(self) -> None: ...
    def FromConfig(
        self, path: str, model: str, scenario: str, conf_type: int = 1, *, strict: bool = False
    ) -> int: ...
    def validate(self) -> None: ...
    def __copy__(self) -> TestSettings: ...
    def __deepcopy__(self, _memo: dict[int, Any], /) -> TestSettings: ...

@final
class LogOutputSettings:
    outdir: str
    prefix: str
    suffix: str
    @property
    def prefix_with_datetime(self) -> bool: ...
    @prefix_with_datetime.setter
    def prefix_with_datetime(self, value: _Boolish, /) -> None: ...
    @property
    def copy_detail_to_stdout(self) -> bool: ...
    @copy_detail_to_stdout.setter
    def copy_detail_to_stdout(self, value: _Boolish, /) -> None: ...
    @property
    def copy_summary_to_stdout(self) -> bool: ...
    @copy_summary_to_stdout.setter
    def copy_summary_to_stdout(self, value: _Boolish, /) -> None: ...
    def __init__(self) -> None: ...

@final
class LogSettings:
    log_output: LogOutputSettings
    log_mode: LoggingMode
    log_mode_async_poll_interval_ms: int
    @property
    def enable_trace(self) -> bool: ...
    @enable_trace.setter
    def enable_trace(self, value: _Boolish, /) -> None: ...
    def __init__(self) -> None: ...

@final
class QuerySample:
    id: int
    index: int
    def __new__(cls, id: SupportsIndex = ..., index: SupportsIndex = ...) -> QuerySample: ...

@final
class QuerySampleResponse:
    id: int
    data: int
    size: int
    n_tokens: int
    def __new__(
        cls, id: SupportsIndex = ..., data: SupportsIndex = ..., size: SupportsIndex = ..., n_tokens: SupportsIndex = ...
    ) -> QuerySampleResponse: ...

class VectorQuerySample(list[QuerySample]): ...
class VectorQuerySampleResponse(list[QuerySampleResponse]): ...

@final
class U64Array:
    """Read-only uint64 vector; supports the buffer protocol (format 'Q')."""
    def __len__(self) -> int: ...
    def __getitem__(self, key: SupportsIndex | slice, /) -> Any: ...
    def __iter__(self) -> Any: ...
    # the buffer protocol (bf_getbuffer) shows as a __buffer__ method from Python 3.12 on
    if sys.version_info >= (3, 12):
        def __buffer__(self, flags: int, /) -> memoryview: ...
    def tolist(self) -> list[int]: ...

class LoadgenError(RuntimeError): ...
class SutCallbackError(LoadgenError): ...
class StallError(LoadgenError): ...
class ConfigError(ValueError): ...
class UnknownResponseIdError(ValueError): ...
class LoadgenConfigWarning(Warning): ...

def ConstructSUT(
    issue_cb: Callable[[list[QuerySample]], None], flush_queries_cb: Callable[[], None], *, name: str = "PySUT"
) -> int: ...
def ConstructFastSUT(
    fast_issue_cb: Callable[[list[int], list[int]], None],
    flush_queries_cb: Callable[[], None],
    *,
    name: str = "PyFastSUT",
) -> int: ...
def ConstructSUTBatched(
    issue_arrays_cb: Callable[[U64Array, U64Array], None | bool | bytes | _Buffer],
    flush_queries_cb: Callable[[], None] | None = None,
    *,
    name: str = "PySUT",
) -> int: ...
def ConstructQueueSUT(flush_queries_cb: Callable[[], None] | None = None, *, name: str = "PySUT") -> int: ...
def PollQueries(sut: int, max_samples: int = 0, timeout_s: float = 0.01) -> tuple[U64Array, U64Array]: ...
def ConstructQDL(
    issue_cb: Callable[[list[QuerySample]], None],
    flush_queries_cb: Callable[[], None],
    name_cb: Callable[[], str],
) -> int: ...
def DestroySUT(sut: int) -> None: ...
def DestroyFastSUT(sut: int) -> None: ...
def DestroyQDL(qdl: int) -> None: ...
def ConstructQSL(
    total_sample_count: int,
    performance_sample_count: int,
    load_samples_to_ram_cb: Callable[[list[int]], None],
    unload_samples_from_ram_cb: Callable[[list[int]], None],
    *,
    name: str = "PyQSL",
) -> int: ...
def DestroyQSL(qsl: int) -> None: ...
def StartTest(
    sut: int,
    qsl: int,
    test_settings: TestSettings,
    audit_config_filename: str = "audit.config",
    *,
    stall_timeout_s: float | None = None,
) -> None: ...
def StartTestWithLogSettings(
    sut: int,
    qsl: int,
    test_settings: TestSettings,
    log_settings: LogSettings,
    audit_config_filename: str = "audit.config",
    *,
    stall_timeout_s: float | None = None,
) -> None: ...
def RegisterIssueQueryThread() -> None: ...
def set_stall_timeout(seconds: float | None) -> None: ...
def QuerySamplesComplete(
    responses: Iterable[QuerySampleResponse],
    response_cb: Callable[[QuerySampleResponse], None] | None = None,
) -> None: ...
def FirstTokenComplete(
    responses: Iterable[QuerySampleResponse],
    response_cb: Callable[[QuerySampleResponse], None] | None = None,
) -> None: ...
def QuerySamplesCompleteArrays(
    ids: _U64s,
    data_ptrs: _U64s | None = None,
    sizes: _U64s | None = None,
    n_tokens: _U64s | None = None,
    response_cb: Callable[[QuerySampleResponse], None] | None = None,
) -> None: ...
def QuerySamplesCompleteBuffer(
    ids: _U64s,
    buffer: _Buffer | bytes | bytearray | memoryview,
    item_size: int,
    response_cb: Callable[[QuerySampleResponse], None] | None = None,
) -> None: ...
def build_info() -> dict[str, Any]: ...
def embedded_mlperf_conf() -> str: ...
def check_config(path: str) -> list[str]: ...

ROUND_SEEDS: dict[str, tuple[int, int, int]]

def apply_round_seeds(settings: TestSettings, round: str) -> TestSettings: ...
