//! Compiles the official MLPerf LoadGen C++ core, unmodified, from an unpacked
//! sdist named by `MLPERF_LOADGEN_SRC`, together with our own C++ shim
//! (`cpp/shim.cc`).
//!
//! * No source file of the sdist is edited or copied. The only generated file
//!   is `mlperf_conf.h` (the embedded mlperf.conf), and only when the sdist
//!   lacks it; it is written to OUT_DIR with the same escaping as the
//!   official setup.py. When the sdist ships one, it must encode the sdist's
//!   `mlperf.conf` byte for byte, or the build fails.
//! * `bindings/python_api.cc` (pybind11) and `bindings/c_api.cc` are not
//!   compiled: the shim talks to the C++ API directly.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const ENV_SRC: &str = "MLPERF_LOADGEN_SRC";

/// The core's translation units, as listed by the official setup.py
/// (`lib_sources` plus the generated version file).
const CORE_SOURCES: &[&str] = &[
    "early_stopping.cc",
    "issue_query_controller.cc",
    "loadgen.cc",
    "logging.cc",
    "test_settings_internal.cc",
    "utils.cc",
    "version.cc",
    "results.cc",
    "generated/version_generated.cc",
];

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    panic!("{msg}");
}

/// setup.py's transformation of mlperf.conf into a C string literal.
fn conf_header(conf: &str) -> String {
    let escaped = conf
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n\"\n\"");
    format!("const char* mlperf_conf =\n\"{escaped}\";\n")
}

fn first_line(cmd: &mut Command) -> String {
    match cmd.output() {
        Ok(o) => {
            let s = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&s).lines().next().unwrap_or("").trim().to_string()
        }
        Err(e) => format!("unknown ({e})"),
    }
}

fn main() {
    println!("cargo:rerun-if-env-changed={ENV_SRC}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=cpp/shim.cc");
    println!("cargo:rerun-if-changed=cpp/shim.h");

    let src = match env::var_os(ENV_SRC) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => fail(&format!(
            "{ENV_SRC} is not set. Point it at the unpacked mlcommons-loadgen sdist \
             (the directory that contains loadgen.cc), e.g. \
             `pip download --no-deps --no-binary :all: mlcommons-loadgen==6.0.17 -d /tmp/lgsdist` \
             then unpack it and export {ENV_SRC}=/tmp/lgsdist/mlcommons_loadgen-6.0.17"
        )),
    };
    if !src.join("loadgen.cc").is_file() {
        fail(&format!(
            "{ENV_SRC}={} does not contain loadgen.cc; it must name the unpacked \
             mlcommons-loadgen sdist root",
            src.display()
        ));
    }
    let src = src.canonicalize().unwrap_or(src);
    for f in CORE_SOURCES.iter().chain(["VERSION.txt", "mlperf.conf"].iter()) {
        if !src.join(f).is_file() {
            fail(&format!("{ENV_SRC}={}: missing {f}", src.display()));
        }
    }

    // Rebuild when anything in the source root changes.
    println!("cargo:rerun-if-changed={}", src.display());
    for dir in [src.clone(), src.join("bindings"), src.join("generated")] {
        if let Ok(rd) = fs::read_dir(&dir) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_file() {
                    println!("cargo:rerun-if-changed={}", p.display());
                }
            }
        }
    }

    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let gen_inc = out.join("include");
    fs::create_dir_all(&gen_inc).unwrap();

    // The embedded mlperf.conf.
    let conf = fs::read_to_string(src.join("mlperf.conf"))
        .unwrap_or_else(|e| fail(&format!("cannot read mlperf.conf: {e}")));
    let expected_header = conf_header(&conf);
    let shipped = src.join("mlperf_conf.h");
    if shipped.is_file() {
        let got = fs::read_to_string(&shipped).unwrap_or_default();
        if got != expected_header {
            fail(&format!(
                "{} does not encode {} byte for byte; the core includes it from its own \
                 directory, so the embedded mlperf.conf would differ from the sdist's. \
                 Use a pristine sdist.",
                shipped.display(),
                src.join("mlperf.conf").display()
            ));
        }
    } else {
        fs::write(gen_inc.join("mlperf_conf.h"), &expected_header).unwrap();
    }

    let version = fs::read_to_string(src.join("VERSION.txt")).unwrap().trim().to_string();
    let mut parts = version.split('.');
    let major = parts.next().unwrap_or("0").to_string();
    let minor = parts.next().unwrap_or("0").to_string();

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .include(&src)
        .include(&gen_inc)
        .include(Path::new("cpp"))
        .define("MAJOR_VERSION", major.as_str())
        .define("MINOR_VERSION", minor.as_str())
        .warnings(false)
        .extra_warnings(false)
        .flag_if_supported("-w")
        .flag_if_supported("-fvisibility=hidden")
        // The core logs __FILE__ in every detail-log line; make it the bare
        // file name, as in the official build (which compiles from the
        // source directory), not this machine's absolute path.
        .flag_if_supported(format!("-fmacro-prefix-map={}/=", src.display()));
    // The core is timing code: keep it optimised even in debug/test builds.
    if env::var("OPT_LEVEL").map(|o| o == "0" || o == "1").unwrap_or(true) {
        build.opt_level(2);
    }
    for f in CORE_SOURCES {
        build.file(src.join(f));
    }
    build.file("cpp/shim.cc");

    let compiler = build.get_compiler();
    let cxx_version = first_line(Command::new(compiler.path()).arg("--version"));
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = first_line(Command::new(rustc).arg("--version"));

    build.compile("mlperf_loadgen_core");

    println!("cargo:rustc-env=LG_BUILD_CXX_VERSION={cxx_version}");
    println!("cargo:rustc-env=LG_BUILD_RUSTC_VERSION={rustc_version}");
    println!("cargo:rustc-env=LG_BUILD_SDIST_VERSION={version}");
    println!("cargo:rustc-env=LG_BUILD_CONF_BYTES={}", conf.len());
}
