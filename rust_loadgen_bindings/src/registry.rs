//! Book-keeping of the sample ids the core has issued and the SUT has not yet
//! completed.
//!
//! The core's `ResponseId` is the address of its per-sample metadata, and
//! `mlperf::QuerySamplesComplete` dereferences it without any check, so an
//! unknown or stale id would crash the process. Every id is therefore
//! registered when issued and taken out when completed; only ids taken here
//! reach the core, each exactly once.
//!
//! Single-sample queries (SingleStream, Server) go into a hash set keyed by
//! address. Large queries (Offline, accuracy sets) are arithmetic progressions
//! of addresses (one `std::vector<SampleMetadata>`), so they are kept as a
//! range plus a bitmap: O(1) per id and 1 bit of memory per sample.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

/// Queries with at least this many samples are stored as ranges when their
/// ids form an arithmetic progression.
const RANGE_MIN: usize = 32;

#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    #[inline]
    fn write_u64(&mut self, v: u64) {
        // Addresses: low bits are alignment zeros; fold the high bits down.
        let x = v.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = x ^ (x >> 29);
    }
}

type IdSet = HashSet<u64, BuildHasherDefault<IdHasher>>;

struct Range {
    first: u64,
    stride: u64,
    n: u64,
    done: Vec<u64>,
    remaining: u64,
}

impl Range {
    #[inline]
    fn slot(&self, id: u64) -> Option<u64> {
        let off = id.wrapping_sub(self.first);
        if id < self.first {
            return None;
        }
        let k = off / self.stride;
        if k < self.n && k * self.stride == off {
            Some(k)
        } else {
            None
        }
    }
    #[inline]
    fn is_done(&self, k: u64) -> bool {
        self.done[(k >> 6) as usize] & (1u64 << (k & 63)) != 0
    }
}

#[derive(Default)]
pub struct Registry {
    singles: IdSet,
    ranges: Vec<Range>,
    last: usize,
    outstanding: u64,
}

pub enum Take {
    Ok,
    Unknown,
}

impl Registry {
    pub fn outstanding(&self) -> u64 {
        self.outstanding
    }

    pub fn clear(&mut self) {
        self.singles = IdSet::default();
        self.ranges.clear();
        self.last = 0;
        self.outstanding = 0;
    }

    /// Registers the ids of one issued query.
    pub fn register<I: ExactSizeIterator<Item = u64> + Clone>(&mut self, ids: I) {
        let n = ids.len();
        if n == 0 {
            return;
        }
        self.outstanding += n as u64;
        if n >= RANGE_MIN {
            let mut it = ids.clone();
            let first = it.next().unwrap();
            let second = it.next().unwrap();
            if second > first {
                let stride = second - first;
                let mut prev = second;
                let mut ap = true;
                for id in it {
                    if id.wrapping_sub(prev) != stride || id < prev {
                        ap = false;
                        break;
                    }
                    prev = id;
                }
                if ap {
                    self.ranges.push(Range {
                        first,
                        stride,
                        n: n as u64,
                        done: vec![0u64; n.div_ceil(64)],
                        remaining: n as u64,
                    });
                    self.last = self.ranges.len() - 1;
                    return;
                }
            }
        }
        self.singles.reserve(n);
        for id in ids {
            self.singles.insert(id);
        }
    }

    #[inline]
    fn find_range(&self, id: u64) -> Option<(usize, u64)> {
        if let Some(r) = self.ranges.get(self.last) {
            if let Some(k) = r.slot(id) {
                return Some((self.last, k));
            }
        }
        for (i, r) in self.ranges.iter().enumerate() {
            if let Some(k) = r.slot(id) {
                return Some((i, k));
            }
        }
        None
    }

    /// True when `id` is issued and not yet completed.
    pub fn contains(&self, id: u64) -> bool {
        if self.singles.contains(&id) {
            return true;
        }
        match self.find_range(id) {
            Some((i, k)) => !self.ranges[i].is_done(k),
            None => false,
        }
    }

    /// Marks `id` completed. `Unknown` for ids never issued, already
    /// completed, or from a finished test.
    #[inline]
    pub fn take(&mut self, id: u64) -> Take {
        if !self.singles.is_empty() && self.singles.remove(&id) {
            self.outstanding -= 1;
            return Take::Ok;
        }
        let Some((i, k)) = self.find_range(id) else {
            return Take::Unknown;
        };
        let r = &mut self.ranges[i];
        let w = (k >> 6) as usize;
        let bit = 1u64 << (k & 63);
        if r.done[w] & bit != 0 {
            return Take::Unknown;
        }
        r.done[w] |= bit;
        r.remaining -= 1;
        self.outstanding -= 1;
        if r.remaining == 0 {
            self.ranges.swap_remove(i);
            self.last = self.ranges.len().saturating_sub(1);
        } else {
            self.last = i;
        }
        Take::Ok
    }

    /// Removes and returns every outstanding id.
    pub fn drain(&mut self) -> Vec<u64> {
        let mut out: Vec<u64> = self.singles.drain().collect();
        for r in self.ranges.drain(..) {
            for k in 0..r.n {
                if !r.is_done(k) {
                    out.push(r.first + k * r.stride);
                }
            }
        }
        self.last = 0;
        self.outstanding = 0;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn singles_and_ranges() {
        let mut r = Registry::default();
        r.register([8u64, 24].into_iter());
        let big: Vec<u64> = (0..100).map(|k| 1000 + 40 * k).collect();
        r.register(big.iter().copied());
        assert_eq!(r.outstanding(), 102);
        assert!(r.contains(1040));
        assert!(!r.contains(1041));
        assert!(matches!(r.take(1040), Take::Ok));
        assert!(matches!(r.take(1040), Take::Unknown));
        assert!(matches!(r.take(1041), Take::Unknown));
        assert!(matches!(r.take(8), Take::Ok));
        assert!(matches!(r.take(8), Take::Unknown));
        let rest = r.drain();
        assert_eq!(rest.len(), 100);
        assert_eq!(r.outstanding(), 0);
    }

    #[test]
    fn non_progression_goes_to_set() {
        let mut r = Registry::default();
        let ids: Vec<u64> = (0..64).map(|k| 16 + k * k * 8).collect();
        r.register(ids.iter().copied());
        for id in &ids {
            assert!(matches!(r.take(*id), Take::Ok));
        }
        assert_eq!(r.outstanding(), 0);
    }
}
