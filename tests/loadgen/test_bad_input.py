"""Bad input gives a Python exception (with the LoadGen's own message where it
has one), never a hang or an abort."""

from __future__ import annotations

import threading
import time
import warnings

import pytest

from ._inproc import log_settings, null_qsl, result, settings


def write(tmp_path, text):
    p = tmp_path / "user.conf"
    p.write_text(text)
    return str(p)


# --- conf files -------------------------------------------------------------


def test_malformed_conf_strict_raises_core_message(lg, tmp_path):
    path = write(tmp_path, "*.Offline.min_duration = 100\nretinanet.Offline.target_qps = fast\n")
    s = lg.TestSettings()
    with pytest.raises(lg.ConfigError, match=r"value needs to be integer or double, line=2"):
        s.FromConfig(path, "retinanet", "Offline", 2, strict=True)
    assert s.min_duration_ms == 10000  # unchanged


def test_malformed_conf_default_returns_status_like_official_and_warns(lg, tmp_path):
    path = write(tmp_path, "*.Offline.min_duration 100\n")
    s = lg.TestSettings()
    with pytest.warns(lg.LoadgenConfigWarning, match=r"expected 'key=value', line=1"):
        rc = s.FromConfig(path, "retinanet", "Offline", 2)
    assert rc == -22  # -EINVAL, as the official binding returns


def test_trailing_comment_is_a_core_error(lg, tmp_path):
    path = write(tmp_path, "*.Offline.target_qps = 10 # ten\n")
    with pytest.raises(lg.ConfigError, match="line=1"):
        lg.TestSettings().FromConfig(path, "retinanet", "Offline", 2, strict=True)


def test_unknown_key(lg, tmp_path):
    path = write(tmp_path, "retinanet.Offline.target_qsp = 10\n*.Ofline.min_duration = 5\n")
    with pytest.raises(lg.ConfigError, match=r"unknown key 'retinanet.Offline.target_qsp'") as ei:
        lg.TestSettings().FromConfig(path, "retinanet", "Offline", 2, strict=True)
    assert "Ofline" in str(ei.value)
    s = lg.TestSettings()
    with pytest.warns(lg.LoadgenConfigWarning) as caught:
        assert s.FromConfig(path, "retinanet", "Offline", 2) == 0  # the core ignores them
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2 and "target_qsp" in messages[1] and "scenario 'Ofline'" in messages[0], messages
    assert len(lg.check_config(path)) == 2


def test_missing_conf(lg, tmp_path):
    missing = str(tmp_path / "nope.conf")
    with pytest.raises(lg.ConfigError, match="can't open file"):
        lg.TestSettings().FromConfig(missing, "retinanet", "Offline", 2, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert lg.TestSettings().FromConfig(missing, "retinanet", "Offline", 2) == -2  # -ENOENT


def test_good_conf_is_silent(lg, tmp_path):
    path = write(tmp_path, "# comment\nretinanet.Offline.target_qps = 0x10\n*.*.min_duration = 2000\n")
    s = lg.TestSettings()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert s.FromConfig(path, "retinanet", "Offline", 2, strict=True) == 0
    assert s.offline_expected_qps == 16 and s.min_duration_ms == 2000


def test_float_for_integer_key_is_flagged(lg, tmp_path):
    # The core reads integer keys with strtoull: "1e3" silently becomes 1.
    path = write(tmp_path, "*.*.min_duration = 1e3\n")
    s = lg.TestSettings()
    with pytest.warns(lg.LoadgenConfigWarning, match="read by the LoadGen as 1"):
        assert s.FromConfig(path, "retinanet", "Offline", 2) == 0
    assert s.min_duration_ms == 1  # the core's (official) behaviour
    with pytest.raises(lg.ConfigError):
        lg.TestSettings().FromConfig(path, "retinanet", "Offline", 2, strict=True)


# --- settings -----------------------------------------------------------------


def _start(lg, tmp_path, s, **kw):
    sut = lg.ConstructSUTBatched(lambda ids, idx: lg.QuerySamplesCompleteArrays(ids))
    qsl = null_qsl(lg)
    try:
        lg.StartTestWithLogSettings(sut, qsl, s, log_settings(lg, tmp_path), **kw)
    finally:
        lg.DestroySUT(sut)
        lg.DestroyQSL(qsl)


@pytest.mark.parametrize(
    "scenario,field,value,match",
    [
        ("Server", "server_target_qps", -5.0, "Invalid value for server_target_qps requested. requested: -5"),
        ("Server", "server_target_qps", 0.0, "server_target_qps must be > 0"),
        ("Offline", "offline_expected_qps", -1.0, "Invalid value for offline_expected_qps requested"),
        ("Offline", "offline_expected_qps", 0.0, "offline_expected_qps must be > 0"),
        ("SingleStream", "single_stream_expected_latency_ns", 0.0, "single_stream_expected_latency_ns must be > 0"),
        ("MultiStream", "multi_stream_expected_latency_ns", -1.0, "multi_stream_expected_latency_ns must be > 0"),
        ("MultiStream", "multi_stream_samples_per_query", 0, "multi_stream_samples_per_query must be > 0"),
        ("Server", "server_target_latency_percentile", 1.5, "server_target_latency_percentile"),
    ],
)
def test_zero_or_negative_targets(lg, tmp_path, scenario, field, value, match):
    s = settings(lg, scenario, **{field: value})
    with pytest.raises(ValueError, match=match):
        s.validate()
    with pytest.raises(ValueError, match=match):
        _start(lg, tmp_path, s)


def test_negative_unsigned_field_rejected(lg):
    s = lg.TestSettings()
    with pytest.raises(TypeError, match="out of range"):  # TypeError, as the official module
        s.min_query_count = -1


def test_qsl_counts(lg):
    with pytest.raises(ValueError, match=r"performance_sample_count \(100\) is larger than total_sample_count \(10\)"):
        lg.ConstructQSL(10, 100, lambda ix: None, lambda ix: None)
    with pytest.raises(ValueError, match="total_sample_count must be > 0"):
        lg.ConstructQSL(0, 0, lambda ix: None, lambda ix: None)
    with pytest.raises(TypeError):
        lg.ConstructQSL(10, 5, None, lambda ix: None)


def test_unknown_handles(lg, tmp_path):
    qsl = null_qsl(lg)
    with pytest.raises(ValueError, match="unknown SUT handle"):
        lg.StartTestWithLogSettings(12345, qsl, settings(lg), log_settings(lg, tmp_path))
    with pytest.raises(ValueError):
        lg.DestroySUT(12345)
    lg.DestroyQSL(qsl)
    with pytest.raises(ValueError):
        lg.DestroyQSL(qsl)


# --- callbacks ------------------------------------------------------------------


@pytest.mark.parametrize("scenario", ["SingleStream", "MultiStream", "Server", "Offline"])
def test_issue_callback_raising_fails_the_test(lg, tmp_path, scenario):
    calls = []

    def issue(qs):
        calls.append(len(qs))
        if len(calls) == 3 or scenario == "Offline":
            raise ZeroDivisionError("SUT exploded")
        lg.QuerySamplesComplete([lg.QuerySampleResponse(q.id, 0, 0) for q in qs])

    sut = lg.ConstructSUT(issue, lambda: None)
    qsl = null_qsl(lg)
    t = time.monotonic()
    with pytest.raises(lg.SutCallbackError, match="IssueQuery callback failed: ZeroDivisionError: SUT exploded") as ei:
        lg.StartTestWithLogSettings(sut, qsl, settings(lg, scenario), log_settings(lg, tmp_path))
    assert time.monotonic() - t < 30
    assert isinstance(ei.value.__cause__, ZeroDivisionError)
    assert len(calls) == (1 if scenario == "Offline" else 3)  # no Python call after the failure
    lg.DestroySUT(sut)
    lg.DestroyQSL(qsl)


def test_load_and_flush_callbacks_raising(lg, tmp_path):
    sut = lg.ConstructSUTBatched(lambda ids, idx: lg.QuerySamplesCompleteArrays(ids))

    def bad_load(ix):
        raise KeyError("sample store offline")

    qsl = null_qsl(lg, load=bad_load)
    with pytest.raises(lg.SutCallbackError, match="LoadSamplesToRam") as ei:
        lg.StartTestWithLogSettings(sut, qsl, settings(lg), log_settings(lg, tmp_path))
    assert isinstance(ei.value.__cause__, KeyError)
    lg.DestroyQSL(qsl)

    def bad_flush():
        raise RuntimeError("flush failed")

    sut2 = lg.ConstructSUTBatched(lambda ids, idx: lg.QuerySamplesCompleteArrays(ids), bad_flush)
    qsl = null_qsl(lg)
    with pytest.raises(lg.SutCallbackError, match="FlushQueries callback failed: RuntimeError: flush failed"):
        lg.StartTestWithLogSettings(sut2, qsl, settings(lg), log_settings(lg, tmp_path))
    for h in (sut, sut2):
        lg.DestroySUT(h)
    lg.DestroyQSL(qsl)


def test_response_cb_raising(lg, tmp_path):
    def response_cb(r):
        raise ValueError("lazy copy failed")

    seen = []

    def issue(ids, idx):
        try:
            lg.QuerySamplesCompleteArrays(ids, response_cb=response_cb)
        except ValueError as e:
            seen.append(str(e))

    sut = lg.ConstructSUTBatched(issue)
    qsl = null_qsl(lg)
    lg.StartTestWithLogSettings(sut, qsl, settings(lg, mode="AccuracyOnly"), log_settings(lg, tmp_path))
    assert seen and seen[0] == "lazy copy failed"  # the samples still completed
    lg.DestroySUT(sut)
    lg.DestroyQSL(qsl)


def test_completing_unknown_or_twice(lg, tmp_path):
    errors = []

    def issue(qs):
        ok = [lg.QuerySampleResponse(q.id, 0, 0) for q in qs]
        try:
            lg.QuerySamplesComplete([*ok, lg.QuerySampleResponse(0x1234, 0, 0)])
        except lg.UnknownResponseIdError as e:
            errors.append(str(e))
        try:
            lg.QuerySamplesComplete(ok)  # twice
        except lg.UnknownResponseIdError as e:
            errors.append(str(e))

    sut = lg.ConstructSUT(issue, lambda: None)
    qsl = null_qsl(lg)
    lg.StartTestWithLogSettings(sut, qsl, settings(lg, "SingleStream", min_query_count=400), log_settings(lg, tmp_path))
    assert result(tmp_path) == "VALID"
    assert "0x1234" in errors[0] and "not outstanding" in errors[0]
    assert len(errors) == 800
    with pytest.raises(lg.UnknownResponseIdError, match="no LoadGen test is running"):
        lg.QuerySamplesComplete([lg.QuerySampleResponse(0x1234, 0, 0)])
    with pytest.raises(TypeError):
        lg.QuerySamplesComplete([object()])
    lg.DestroySUT(sut)
    lg.DestroyQSL(qsl)


def test_sut_that_never_completes_is_bounded(lg, tmp_path):
    sut = lg.ConstructSUTBatched(lambda ids, idx: None)
    qsl = null_qsl(lg)
    t = time.monotonic()
    with pytest.raises(lg.StallError, match="no sample completed"):
        lg.StartTestWithLogSettings(sut, qsl, settings(lg), log_settings(lg, tmp_path), stall_timeout_s=0.3)
    assert time.monotonic() - t < 10
    lg.DestroySUT(sut)
    lg.DestroyQSL(qsl)


def test_stalled_worker_completing_late_is_harmless(lg, tmp_path):
    held = []
    sut = lg.ConstructSUTBatched(lambda ids, idx: held.append(ids))
    qsl = null_qsl(lg)
    lg.set_stall_timeout(0.3)
    try:
        with pytest.raises(lg.StallError):
            lg.StartTestWithLogSettings(sut, qsl, settings(lg), log_settings(lg, tmp_path))
    finally:
        lg.set_stall_timeout(None)
    with pytest.raises(lg.UnknownResponseIdError):
        lg.QuerySamplesCompleteArrays(held[0])  # stale ids: rejected, not dereferenced
    lg.DestroySUT(sut)
    lg.DestroyQSL(qsl)


def test_concurrent_start_test_is_refused(lg, tmp_path):
    gate = threading.Event()
    release = threading.Event()

    def issue(ids, idx):
        gate.set()
        release.wait(10)
        lg.QuerySamplesCompleteArrays(ids)

    sut = lg.ConstructSUTBatched(issue)
    qsl = null_qsl(lg)
    t = threading.Thread(target=lambda: lg.StartTestWithLogSettings(sut, qsl, settings(lg), log_settings(lg, tmp_path)))
    t.start()
    assert gate.wait(10)
    with pytest.raises(lg.LoadgenError, match="already running"):
        lg.StartTestWithLogSettings(sut, qsl, settings(lg), log_settings(lg, tmp_path / "x"))
    release.set()
    t.join(10)
    assert result(tmp_path) == "VALID"
    lg.DestroySUT(sut)
    lg.DestroyQSL(qsl)
