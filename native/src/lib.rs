//! mlbuild's native helpers.
//!
//! Hashing is the hot path of the store: every fetched, added or built entry is
//! hashed once with sha256 (the upstream-compatible identity) and blake3 (the
//! fast one).  Both digests are computed in one read pass, in constant memory,
//! with the two hashers running on separate cores and the GIL released.
//!
//! Tree format ("mlbuild-nar-1"), hashed by `hash_tree`, documented in
//! ARCHITECTURE.md and re-implemented independently by the tests:
//!
//! ```text
//! stream  := "mlbuild-nar-1\0" node
//! node    := "F" exec u64le(size) bytes       exec = "x" | "-"
//!          | "L" u64le(len) target
//!          | "D" u64le(count) { u64le(len) name node }*   entries sorted by name bytes
//! ```
//! No times, owners or modes beyond the executable bit are hashed.

use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const CHUNK: usize = 4 << 20;

/// Both hashers plus a byte count, fed chunk by chunk.
pub struct DualHasher {
    sha: Sha256,
    b3: blake3::Hasher,
    size: u64,
}

impl Default for DualHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl DualHasher {
    pub fn new() -> Self {
        DualHasher { sha: Sha256::new(), b3: blake3::Hasher::new(), size: 0 }
    }

    /// Feed one chunk; large chunks are hashed by both algorithms in parallel.
    pub fn update(&mut self, data: &[u8]) {
        self.size += data.len() as u64;
        if data.len() >= (256 << 10) {
            let (sha, b3) = (&mut self.sha, &mut self.b3);
            std::thread::scope(|s| {
                s.spawn(|| sha.update(data));
                b3.update(data);
            });
        } else {
            self.sha.update(data);
            self.b3.update(data);
        }
    }

    pub fn finish(self) -> (u64, String, String) {
        (self.size, hex::encode(self.sha.finalize()), self.b3.finalize().to_hex().to_string())
    }
}

fn feed_file(h: &mut DualHasher, path: &Path, buf: &mut [u8]) -> io::Result<u64> {
    let mut f = File::open(path)?;
    let mut total = 0u64;
    loop {
        let n = f.read(buf)?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
        h.update(&buf[..n]);
    }
}

pub fn hash_file_impl(path: &Path) -> io::Result<(u64, String, String)> {
    let mut h = DualHasher::new();
    let mut buf = vec![0u8; CHUNK];
    feed_file(&mut h, path, &mut buf)?;
    Ok(h.finish())
}

fn tree_node(h: &mut DualHasher, path: &Path, buf: &mut [u8]) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = fs::read_link(path)?;
        let t = target.as_os_str().as_bytes();
        h.update(b"L");
        h.update(&(t.len() as u64).to_le_bytes());
        h.update(t);
    } else if ft.is_dir() {
        let mut names: Vec<Vec<u8>> = fs::read_dir(path)?
            .map(|e| e.map(|e| e.file_name().as_bytes().to_vec()))
            .collect::<io::Result<_>>()?;
        names.sort();
        h.update(b"D");
        h.update(&(names.len() as u64).to_le_bytes());
        for name in names {
            h.update(&(name.len() as u64).to_le_bytes());
            h.update(&name);
            let child = path.join(std::ffi::OsStr::from_bytes(&name));
            tree_node(h, &child, buf)?;
        }
    } else if ft.is_file() {
        let exec = meta.permissions().mode() & 0o111 != 0;
        h.update(b"F");
        h.update(if exec { b"x" } else { b"-" });
        h.update(&meta.len().to_le_bytes());
        let n = feed_file(h, path, buf)?;
        if n != meta.len() {
            return Err(io::Error::new(
                io::ErrorKind::Other,
                format!("{} changed size while being hashed", path.display()),
            ));
        }
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file, directory or symlink", path.display()),
        ));
    }
    Ok(())
}

pub fn hash_tree_impl(path: &Path) -> io::Result<(u64, String, String)> {
    let mut h = DualHasher::new();
    h.update(b"mlbuild-nar-1\0");
    let mut buf = vec![0u8; CHUNK];
    tree_node(&mut h, path, &mut buf)?;
    Ok(h.finish())
}

fn os_err(path: &str, e: io::Error) -> PyErr {
    PyOSError::new_err(format!("{path}: {e}"))
}

/// hash_file(path) -> (size, sha256_hex, blake3_hex) of a file's bytes.
#[pyfunction]
fn hash_file(py: Python<'_>, path: String) -> PyResult<(u64, String, String)> {
    py.allow_threads(|| hash_file_impl(Path::new(&path))).map_err(|e| os_err(&path, e))
}

/// hash_tree(path) -> (serialised_size, sha256_hex, blake3_hex) of the canonical tree stream.
#[pyfunction]
fn hash_tree(py: Python<'_>, path: String) -> PyResult<(u64, String, String)> {
    py.allow_threads(|| hash_tree_impl(Path::new(&path))).map_err(|e| os_err(&path, e))
}

/// Incremental hasher for bytes arriving from the network.
#[pyclass]
struct Hasher {
    inner: Option<DualHasher>,
}

#[pymethods]
impl Hasher {
    #[new]
    fn new() -> Self {
        Hasher { inner: Some(DualHasher::new()) }
    }

    fn update(&mut self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        let h = self
            .inner
            .as_mut()
            .ok_or_else(|| pyo3::exceptions::PyValueError::new_err("hasher already finished"))?;
        py.allow_threads(|| h.update(data));
        Ok(())
    }

    /// finish() -> (size, sha256_hex, blake3_hex)
    fn finish(&mut self) -> PyResult<(u64, String, String)> {
        self.inner
            .take()
            .map(|h| h.finish())
            .ok_or_else(|| pyo3::exceptions::PyValueError::new_err("hasher already finished"))
    }
}

/// Per-class greedy non-maximum suppression over detections sorted by descending score
/// (stable on ties), as torchvision's `batched_nms`: within a class, a box is dropped when
/// its IoU with an already kept box exceeds `iou_threshold`. IoU is computed in f32 exactly
/// as the numpy reference in `mlbuild.harness.postprocess.nms_reference` does.
/// Returns the kept indices in descending score order, at most `max_detections` (0 = all).
pub fn nms_impl(boxes: &[f32], scores: &[f32], classes: &[i64], iou_threshold: f32, max_detections: usize) -> Vec<i64> {
    let n = scores.len();
    let mut order: Vec<usize> = (0..n).collect();
    // stable sort by descending score; NaN scores sort last
    order.sort_by(|&a, &b| scores[b].partial_cmp(&scores[a]).unwrap_or(std::cmp::Ordering::Equal));
    let area = |i: usize| -> f32 {
        let b = &boxes[4 * i..4 * i + 4];
        (b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0)
    };
    let mut suppressed = vec![false; n];
    let mut kept = Vec::new();
    for (ri, &i) in order.iter().enumerate() {
        if suppressed[ri] {
            continue;
        }
        kept.push(i as i64);
        if max_detections > 0 && kept.len() == max_detections {
            break;
        }
        let bi = &boxes[4 * i..4 * i + 4];
        let ai = area(i);
        for (rj, &j) in order.iter().enumerate().skip(ri + 1) {
            if suppressed[rj] || classes[j] != classes[i] {
                continue;
            }
            let bj = &boxes[4 * j..4 * j + 4];
            let iw = (bi[2].min(bj[2]) - bi[0].max(bj[0])).max(0.0);
            let ih = (bi[3].min(bj[3]) - bi[1].max(bj[1])).max(0.0);
            let inter = iw * ih;
            let union = ai + area(j) - inter;
            let iou = if union > 0.0 { inter / union } else { 0.0 };
            if iou > iou_threshold {
                suppressed[rj] = true;
            }
        }
    }
    kept
}

/// nms(boxes float32[n,4] xyxy, scores float32[n], classes int64[n], iou_threshold, max_detections)
/// -> list of kept indices (descending score). Any C-contiguous buffers (numpy arrays) work.
#[pyfunction]
fn nms(
    py: Python<'_>,
    boxes: pyo3::buffer::PyBuffer<f32>,
    scores: pyo3::buffer::PyBuffer<f32>,
    classes: pyo3::buffer::PyBuffer<i64>,
    iou_threshold: f32,
    max_detections: usize,
) -> PyResult<Vec<i64>> {
    let b = boxes.to_vec(py)?;
    let s = scores.to_vec(py)?;
    let c = classes.to_vec(py)?;
    if b.len() != 4 * s.len() || c.len() != s.len() {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "nms: expected boxes [n,4], scores [n], classes [n]; got {} box values, {} scores, {} classes",
            b.len(),
            s.len(),
            c.len()
        )));
    }
    Ok(py.allow_threads(|| nms_impl(&b, &s, &c, iou_threshold, max_detections)))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(nms, m)?)?;
    m.add_function(wrap_pyfunction!(hash_file, m)?)?;
    m.add_function(wrap_pyfunction!(hash_tree, m)?)?;
    m.add_class::<Hasher>()?;
    m.add("TREE_FORMAT", "mlbuild-nar-1")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_digests_are_the_known_ones() {
        let h = DualHasher::new();
        let (n, sha, b3) = h.finish();
        assert_eq!(n, 0);
        assert_eq!(sha, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(b3, "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262");
    }

    #[test]
    fn chunking_does_not_change_the_digest() {
        let data = vec![7u8; 1 << 20];
        let mut a = DualHasher::new();
        a.update(&data);
        let mut b = DualHasher::new();
        for c in data.chunks(1000) {
            b.update(c);
        }
        assert_eq!(a.finish(), b.finish());
    }
}
