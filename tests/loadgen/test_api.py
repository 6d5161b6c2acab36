"""API surface of mlbuild_loadgen against the official mlperf_loadgen
(introspection only; no test is run in this process with the official core)."""

from __future__ import annotations

import pickle
import zipfile

import mlperf_loadgen  # the official wheel: a test dependency, never optional
import pytest


def public(mod):
    return {n for n in dir(mod) if not n.startswith("_")}


def test_every_official_name_exists(lg):
    missing = public(mlperf_loadgen) - public(lg)
    assert not missing


def test_test_settings_fields_and_defaults(lg):
    ref, ours = mlperf_loadgen.TestSettings(), lg.TestSettings()
    fields = {n for n in dir(ref) if not n.startswith("_") and n != "FromConfig"}
    assert fields <= set(dir(ours))
    for f in sorted(fields):
        a, b = getattr(ref, f), getattr(ours, f)
        if f in ("scenario", "mode"):
            assert a.name == b.name and int(a) == int(b), f
        else:
            assert a == b and type(a) is type(b), (f, a, b)
        setattr(ours, f, b)  # read/write


def test_log_settings_fields_and_defaults(lg):
    for cls in ("LogSettings", "LogOutputSettings"):
        ref, ours = getattr(mlperf_loadgen, cls)(), getattr(lg, cls)()
        for f in (n for n in dir(ref) if not n.startswith("_")):
            a, b = getattr(ref, f), getattr(ours, f)
            if f == "log_output":
                continue
            if f == "log_mode":
                assert a.name == b.name
            else:
                assert a == b, (cls, f)
    ls = lg.LogSettings()
    ls.log_output.outdir = "/x"  # live sub-object, as with pybind's def_readwrite
    assert ls.log_output.outdir == "/x"
    o = lg.LogOutputSettings()
    ls.log_output = o
    o.prefix = "changed"
    assert ls.log_output.prefix == "mlperf_log_"  # assignment copies


def test_enums(lg):
    for e in ("TestScenario", "TestMode", "LoggingMode"):
        ref = getattr(mlperf_loadgen, e)
        ours = getattr(lg, e)
        for name, member in ref.__members__.items():
            assert int(getattr(ours, name)) == int(member)
            assert getattr(ours, name).name == name


def test_from_config_same_result_as_official(lg):
    from .conftest import SAMPLES

    conf = SAMPLES / "sample_user.conf"
    assert conf.exists(), f"the shared LoadGen samples are expected at {SAMPLES}"
    for scenario in ("Offline", "Server", "SingleStream", "MultiStream"):
        a, b = mlperf_loadgen.TestSettings(), lg.TestSettings()
        # conf_type 0 (embedded mlperf.conf) and 2 (audit) do not touch the
        # process-global "multiple conf files" counter.
        assert a.FromConfig("", "retinanet", scenario, 0) == b.FromConfig("", "retinanet", scenario, 0) == 0
        ra = a.FromConfig(str(conf), "retinanet", scenario, 2)
        assert ra == b.FromConfig(str(conf), "retinanet", scenario, 2) == 0
        for f in (n for n in dir(a) if not n.startswith("_") and n != "FromConfig"):
            va, vb = getattr(a, f), getattr(b, f)
            assert (int(va) == int(vb)) if f in ("scenario", "mode") else va == vb, (scenario, f, va, vb)


def test_embedded_conf_is_the_sdists(lg):
    conf = lg.embedded_mlperf_conf()
    assert len(conf.encode()) == 8427  # loadgen.md §0: mlperf.conf of 6.0.17
    assert "2085463073848966840" in conf


def test_query_sample_objects(lg):
    r = lg.QuerySampleResponse()
    assert (r.id, r.data, r.size, r.n_tokens) == (0, 0, 0, 0)
    r = lg.QuerySampleResponse(1, 2, 3)
    assert r.n_tokens == 0
    r = lg.QuerySampleResponse(1, 2, 3, 4)
    assert r.n_tokens == 4
    r.data = 99
    assert r.data == 99
    q = lg.QuerySample(5, 6)
    q2 = pickle.loads(pickle.dumps(q))
    assert (q2.id, q2.index) == (5, 6)
    r2 = pickle.loads(pickle.dumps(r))
    assert (r2.id, r2.data, r2.size, r2.n_tokens) == (1, 99, 3, 4)


def test_build_info(lg):
    info = lg.build_info()
    assert info["loadgen_version"] == "6.0.17"
    assert info["loadgen_version_logged"] == "6.0.17 @ d6147c7eb7"
    assert info["loadgen_file_sha1"]["/loadgen.cc"] == "86bc3765857092b9d1f380604b101c771679842a"
    assert info["crate_version"] == lg.__version__
    assert info["rustc_version"].startswith("rustc ")
    assert info["cxx_compiler_version"]
    assert info["abi_ok"] is True


def test_round_seeds(lg):
    s = lg.TestSettings()
    assert s.FromConfig("", "retinanet", "Offline", 0) == 0
    assert (s.qsl_rng_seed, s.sample_index_rng_seed, s.schedule_rng_seed) == lg.ROUND_SEEDS["v6.1"]
    lg.apply_round_seeds(s, "v6.0")
    assert (s.qsl_rng_seed, s.sample_index_rng_seed, s.schedule_rng_seed) == (
        2465351861681999779,
        14276810075590677512,
        3936089224930324775,
    )
    assert lg.ROUND_SEEDS["v5.1"] == (1780908523862526354, 14771362308971278857, 18209322760996052031)
    with pytest.raises(ValueError):
        lg.apply_round_seeds(s, "v4.0")


def test_wheel_layout(lg_wheel):
    names = zipfile.ZipFile(lg_wheel).namelist()
    assert "mlbuild_loadgen/__init__.pyi" in names
    assert "mlbuild_loadgen/py.typed" in names
    assert any(n.startswith("mlbuild_loadgen-") and n.endswith("METADATA") for n in names)
    meta = next(zipfile.ZipFile(lg_wheel).read(n) for n in names if n.endswith("METADATA")).decode()
    assert "Name: mlbuild-loadgen" in meta
