//! The metadata image of a file read by ranges ([`crate::RemoteFile`]): the data variable's
//! chunk index (read by [`h5index`]), then every other byte of the file in a sparse buffer
//! that libnetcdf opens in place.

use std::cell::RefCell;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use crate::chunked::{Layout, Remote};
use crate::error::DecodeError;
use crate::h5index::{self, IndexError};
use crate::remote::RemoteFile;

/// libnetcdf's view of a remote file: every byte of it except the data variable's chunks, in a
/// sparse zero-filled buffer of the file's size (pages never written are never backed by
/// memory). libnetcdf opens it in place (`nc_open_mem` locks the memory: no copy).
pub(crate) struct MetaImage {
    // Declared first: closed before the bytes it reads are freed.
    file: netcdf::FileMem<'static>,
    _bytes: Arc<Vec<u8>>,
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
    let fetch = |what: &str| {
        let what = what.to_string();
        move |source| DecodeError::Fetch {
            path: path.to_path_buf(),
            what,
            source,
        }
    };
    // A small file is read whole in one go, and its index served from it: its index reads,
    // coalesced across small gaps, would fetch most of it anyway, then the rest again.
    let whole = size <= src.read_whole_below();
    let file_bytes = if whole {
        let all = 0..size;
        let got = src
            .read(std::slice::from_ref(&all))
            .map_err(fetch("the file"))?;
        let b = got.into_iter().next().unwrap_or_default();
        if b.len() != len {
            return Err(DecodeError::Corrupt {
                path: path.to_path_buf(),
                detail: format!("asked for the file's {len} bytes, got {}", b.len()),
            });
        }
        Some(b)
    } else {
        None
    };
    let held = RefCell::new(Vec::<(u64, Vec<u8>)>::new());
    let read = |ranges: &[Range<u64>]| {
        if let Some(b) = &file_bytes {
            return Ok(ranges
                .iter()
                .map(|r| b[(r.start as usize).min(len)..(r.end as usize).min(len)].to_vec())
                .collect());
        }
        let got = src.read(ranges)?;
        let mut h = held.borrow_mut();
        h.extend(ranges.iter().map(|r| r.start).zip(got.iter().cloned()));
        Ok(got)
    };
    let index = match h5index::read_chunked_var(&read, size, var) {
        Ok(ci) => ci,
        Err(IndexError::Unsupported(why)) => return Err(unsupported(path, var, &why)),
        Err(IndexError::Io(e)) => return Err(fetch("the chunk index")(e)),
    };
    let layout = Layout::from_index(&index).map_err(|why| unsupported(path, var, &why))?;

    let (mut bytes, read) = match file_bytes {
        Some(b) => (b, vec![all_bytes(size)]),
        None => {
            let mut bytes = vec![0_u8; len];
            let mut read: Vec<Range<u64>> = Vec::new();
            for (start, b) in held.into_inner() {
                let end = (start as usize).saturating_add(b.len()).min(len);
                if (start as usize) < end {
                    bytes[start as usize..end].copy_from_slice(&b[..end - start as usize]);
                    read.push(start..end as u64);
                }
            }
            (bytes, merged(read))
        }
    };
    let mut covered = read.clone();
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
        whole,
        "remote file opened"
    );
    // Only the file name: libnetcdf takes a path with a scheme (`s3://…`) for a URL to open.
    let name = path
        .file_name()
        .map_or_else(|| "remote.nc".into(), |n| n.to_string_lossy().into_owned());
    // SAFETY: the slice points into `bytes`' heap buffer, which lives (unmoved: moving a Vec
    // does not move its buffer) in the same `MetaImage` as the handle and is dropped after it
    // (field order); libnetcdf only reads it.
    let image: &'static [u8] = unsafe { std::slice::from_raw_parts(bytes.as_ptr(), bytes.len()) };
    let file = netcdf::open_mem(Some(&name), image)
        .map_err(|e| DecodeError::netcdf(path, "open the file's metadata", e))?;
    let bytes = Arc::new(bytes);
    Ok((
        MetaImage {
            file,
            _bytes: Arc::clone(&bytes),
        },
        Remote {
            src,
            layout,
            image: bytes,
            held: read,
        },
    ))
}

/// The range of a whole file of `size` bytes.
fn all_bytes(size: u64) -> Range<u64> {
    0..size
}

fn unsupported(path: &Path, var: &str, why: &str) -> DecodeError {
    DecodeError::UnsupportedStorage {
        path: path.to_path_buf(),
        variable: var.to_string(),
        detail: format!("cannot be read by ranges: {why}"),
    }
}

/// The ranges sorted, overlapping and touching ones joined.
fn merged(mut r: Vec<Range<u64>>) -> Vec<Range<u64>> {
    r.sort_unstable_by_key(|x| x.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(r.len());
    for x in r {
        match out.last_mut() {
            Some(l) if x.start <= l.end => l.end = l.end.max(x.end),
            _ => out.push(x),
        }
    }
    out
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
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_the_uncovered_parts() {
        assert_eq!(gaps(vec![], 10), vec![0..10]);
        assert_eq!(gaps(vec![2..4, 0..1, 3..6], 10), vec![1..2, 6..10]);
        assert_eq!(gaps(vec![0..10], 10), Vec::<Range<u64>>::new());
        assert_eq!(gaps(vec![5..20], 10), vec![0..5]);
    }

    #[test]
    fn merged_joins_overlapping_and_touching_ranges() {
        assert_eq!(merged(vec![5..7, 0..2, 2..3, 6..9]), vec![0..3, 5..9]);
    }
}
