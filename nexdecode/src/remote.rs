//! Files that are not on disk: their bytes are read by range (S3 ranged GETs, say).
//!
//! [`GridFile::open_remote`](crate::GridFile::open_remote) reads the HDF5 chunk index of the
//! data variable through [`RemoteFile::read`] (the superblock, the object headers on the way
//! to the variable and its chunk B-tree, a few round trips), then every other byte of the file
//! (metadata and coordinate variables: everything but the variable's chunks) into a sparse
//! in-memory image that libnetcdf opens. A decode then announces the chunks it needs, in the
//! order it will use them ([`RemoteFile::prefetch`]), and inflates each batch of chunks as soon
//! as its bytes have arrived ([`RemoteFile::take`]) while later ones are still in flight.

use std::cell::RefCell;
use std::io;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use crate::chunked::Layout;
use crate::error::DecodeError;
use crate::h5index::{self, IndexError};

/// A file read by byte ranges. Implementations fetch concurrently; every method blocks the
/// calling (decoding) thread only until the bytes it returns are there.
pub trait RemoteFile: Send + Sync {
    /// The file's size in bytes.
    fn size(&self) -> u64;

    /// Reads these ranges now and returns their bytes in the same order (metadata and the chunk
    /// index: a few small reads at a time, fetched concurrently).
    ///
    /// # Errors
    /// Any failure to get the bytes (the implementation's error, wrapped in [`io::Error`]).
    fn read(&self, ranges: &[Range<u64>]) -> io::Result<Vec<Vec<u8>>>;

    /// The decoder will [`take`](RemoteFile::take) these ranges (a variable's chunks), each once,
    /// in this order: start fetching them (coalescing neighbours, several requests in flight,
    /// a bounded number of bytes ahead of the decoder). Called once per decode, before its
    /// first `take`.
    fn prefetch(&self, ranges: &[Range<u64>]);

    /// The bytes of one range announced by [`prefetch`](RemoteFile::prefetch), blocking until
    /// they have arrived; the implementation may drop them afterwards.
    ///
    /// # Errors
    /// A failed fetch of the range (after the implementation's own retries).
    fn take(&self, range: Range<u64>) -> io::Result<Vec<u8>>;
}

/// A remote file opened for decoding: where its data variable's chunks are, and the source of
/// their bytes.
pub(crate) struct Remote {
    pub(crate) src: Arc<dyn RemoteFile>,
    pub(crate) layout: Layout,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("size", &self.src.size())
            .field("layout", &self.layout)
            .finish()
    }
}

/// libnetcdf's view of a remote file: every byte of it except the data variable's chunks, in a
/// sparse zero-filled buffer of the file's size (pages never written are never backed by
/// memory). libnetcdf opens it in place (`nc_open_mem` locks the memory: no copy).
pub(crate) struct MetaImage {
    // Declared first: closed before the bytes it reads are freed.
    file: netcdf::FileMem<'static>,
    _bytes: Vec<u8>,
}

impl MetaImage {
    pub(crate) fn file(&self) -> &netcdf::File {
        &self.file
    }
}

/// Reads the chunk index of `var` and the rest of the file's metadata through `src`.
///
/// # Errors
/// [`DecodeError::UnsupportedStorage`] when the variable cannot be streamed (not HDF5, not
/// chunked, not a 4-byte float with shuffle + deflate, a chunk without storage, a structure
/// the index reader does not handle): the caller reads the whole file instead.
/// [`DecodeError::Fetch`] when reading fails; [`DecodeError::Netcdf`] when libnetcdf cannot
/// open the metadata.
pub(crate) fn open(
    src: Arc<dyn RemoteFile>,
    path: &Path,
    var: &str,
) -> Result<(MetaImage, Remote), DecodeError> {
    let size = src.size();
    let len = usize::try_from(size).map_err(|_| unsupported(path, var, "file too large"))?;
    let held = RefCell::new(Vec::<(u64, Vec<u8>)>::new());
    let read = |ranges: &[Range<u64>]| {
        let got = src.read(ranges)?;
        let mut h = held.borrow_mut();
        h.extend(ranges.iter().map(|r| r.start).zip(got.iter().cloned()));
        Ok(got)
    };
    let fetch = |what: &str| {
        let what = what.to_string();
        move |source| DecodeError::Fetch {
            path: path.to_path_buf(),
            what,
            source,
        }
    };
    let index = match h5index::read_chunked_var(&read, size, var) {
        Ok(ci) => ci,
        Err(IndexError::Unsupported(why)) => return Err(unsupported(path, var, &why)),
        Err(IndexError::Io(e)) => return Err(fetch("the chunk index")(e)),
    };
    let layout = Layout::from_index(&index).map_err(|why| unsupported(path, var, &why))?;

    let mut bytes = vec![0_u8; len];
    let mut covered: Vec<Range<u64>> = Vec::with_capacity(index.chunks.len() + 8);
    for (start, b) in held.into_inner() {
        let end = (start as usize).saturating_add(b.len()).min(len);
        if (start as usize) < end {
            bytes[start as usize..end].copy_from_slice(&b[..end - start as usize]);
            covered.push(start..end as u64);
        }
    }
    covered.extend(index.chunks.iter().map(|c| c.addr..c.addr + c.size));
    let gaps = gaps(covered, size);
    let got = src.read(&gaps).map_err(fetch("the file's metadata"))?;
    for (r, b) in gaps.iter().zip(got) {
        let (s, e) = (r.start as usize, r.end as usize);
        if b.len() != e - s {
            return Err(DecodeError::Corrupt {
                path: path.to_path_buf(),
                detail: format!("asked for bytes {s}..{e}, got {} bytes", b.len()),
            });
        }
        bytes[s..e].copy_from_slice(&b);
    }
    tracing::debug!(
        size,
        chunks = index.chunks.len(),
        metadata_bytes = index
            .read
            .iter()
            .chain(&gaps)
            .map(|r| r.end - r.start)
            .sum::<u64>(),
        metadata_reads = gaps.len() + index.read.len(),
        "remote file opened"
    );
    let name = path.display().to_string();
    // SAFETY: the slice points into `bytes`' heap buffer, which lives (unmoved: moving a Vec
    // does not move its buffer) in the same `MetaImage` as the handle and is dropped after it
    // (field order); libnetcdf only reads it.
    let image: &'static [u8] = unsafe { std::slice::from_raw_parts(bytes.as_ptr(), bytes.len()) };
    let file = netcdf::open_mem(Some(&name), image)
        .map_err(|e| DecodeError::netcdf(path, "open the file's metadata", e))?;
    Ok((
        MetaImage {
            file,
            _bytes: bytes,
        },
        Remote { src, layout },
    ))
}

fn unsupported(path: &Path, var: &str, why: &str) -> DecodeError {
    DecodeError::UnsupportedStorage {
        path: path.to_path_buf(),
        variable: var.to_string(),
        detail: format!("cannot be read by ranges: {why}"),
    }
}

/// The parts of `0..size` that no range of `covered` holds.
fn gaps(mut covered: Vec<Range<u64>>, size: u64) -> Vec<Range<u64>> {
    covered.sort_unstable_by_key(|r| r.start);
    let mut out = Vec::new();
    let mut at = 0;
    for r in covered {
        if r.start > at {
            out.push(at..r.start.min(size));
        }
        at = at.max(r.end);
    }
    if at < size {
        out.push(at..size);
    }
    out.retain(|r| r.start < r.end);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_the_uncovered_parts() {
        assert_eq!(gaps(vec![], 10), vec![0..10]);
        assert_eq!(gaps(vec![2..4, 0..1, 3..6], 10), vec![1..2, 6..10]);
        assert_eq!(gaps(vec![0..10], 10), Vec::<Range<u64>>::new());
        assert_eq!(gaps(vec![5..20], 10), vec![0..5]);
    }
}
