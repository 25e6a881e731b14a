//! An S3 object read by ranges while it decodes: [`ObjectRanges`] is nexdecode's
//! [`RemoteFile`] over ranged GETs, so a job needs no temp file and inflates chunks while later
//! ones are still on the wire.
//!
//! Every GET carries `If-Match` with the ETag of the object's HEAD: an object replaced during
//! the job fails the job as transient ("the object changed while it was being read"), never
//! mixing two versions. Each GET is a [`get_part`]: a body cut or stalled mid-way is asked for
//! its remaining bytes only. The chunks a decode announces are coalesced into requests (ranges
//! closer than [`RangeOptions::gap`], up to [`RangeOptions::max_request`] bytes), run
//! [`RangeOptions::concurrency`] at a time and at most [`RangeOptions::window`] bytes ahead of
//! the decoder, whose memory the job's grant counts.

use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use aws_sdk_s3::Client;
use futures_util::future::try_join_all;
use nexdecode::RemoteFile;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;

use super::{PartSink, get_part, head};
use crate::aws::s3_timeouts;
use crate::config::AwsTimeouts;
use crate::error::JobError;

/// How an object is read by ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeOptions {
    /// GETs in flight.
    pub concurrency: usize,
    /// Announced ranges at most this many bytes apart are fetched by one GET (the bytes
    /// between them are fetched and dropped).
    pub gap: u64,
    /// Largest coalesced GET.
    pub max_request: u64,
    /// Most bytes fetched ahead of the decoder (held in memory until decoded).
    pub window: u64,
    /// Objects up to this size are read whole with their metadata.
    pub whole_below: u64,
}

/// One S3 object read by ranges ([`RemoteFile`]). Its fetches run on the Tokio runtime it was
/// opened on; its methods block the calling (decoding) thread, which must not be a runtime
/// thread (use `spawn_blocking`). Dropping it cancels what is still in flight.
pub struct ObjectRanges {
    shared: Arc<Shared>,
    rt: Handle,
    /// The prefetch drivers and their GETs, aborted on drop.
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

struct Shared {
    client: Client,
    bucket: String,
    key: String,
    etag: Option<String>,
    size: u64,
    timeouts: AwsTimeouts,
    opts: RangeOptions,
    /// Bytes that may still be fetched ahead of the decoder.
    window: Semaphore,
    state: Mutex<State>,
    arrived: Condvar,
    fetched: AtomicU64,
    requests: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Announced ranges not yet taken, and how many times each was announced.
    pending: HashMap<(u64, u64), usize>,
    /// Ranges that have arrived, with the request they came with.
    ready: HashMap<(u64, u64), Vec<Arrived>>,
    /// The first failure, classified; every later `take` fails with its message.
    error: Option<JobError>,
    failed: Option<String>,
}

/// The bytes of an announced range, and the GET that brought them.
type Arrived = (Vec<u8>, Arc<Request>);

/// One coalesced GET and the announced ranges it serves.
struct Request {
    span: Range<u64>,
    members: Vec<Range<u64>>,
    /// Members not yet taken; the window's bytes come back when the last one is.
    left: AtomicUsize,
    cost: u32,
}

impl ObjectRanges {
    /// Reads the object's size and ETag (a HEAD), ready to serve ranges.
    ///
    /// # Errors
    /// S3 errors of the HEAD (classified); an empty object.
    pub async fn open(
        client: &Client,
        bucket: &str,
        key: &str,
        opts: RangeOptions,
    ) -> Result<ObjectRanges, JobError> {
        let (size, etag) = head(client, bucket, key).await?;
        let window = opts.window.clamp(1, u64::from(u32::MAX >> 3)) as usize;
        Ok(ObjectRanges {
            shared: Arc::new(Shared {
                client: client.clone(),
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                etag,
                size,
                timeouts: s3_timeouts(client),
                opts: RangeOptions {
                    concurrency: opts.concurrency.max(1),
                    max_request: opts.max_request.max(1),
                    window: window as u64,
                    ..opts
                },
                window: Semaphore::new(window),
                state: Mutex::new(State::default()),
                arrived: Condvar::new(),
                fetched: AtomicU64::new(0),
                requests: AtomicU64::new(0),
            }),
            rt: Handle::current(),
            tasks: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// Bytes received so far (every GET's body, metadata included).
    pub fn fetched(&self) -> u64 {
        self.shared.fetched.load(Ordering::Relaxed)
    }

    /// GETs sent so far (resumes of a cut body not counted).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// The first fetch failure, classified (transient or not), once: a decode that failed with
    /// `DecodeError::Fetch` failed because of it.
    pub fn take_error(&self) -> Option<JobError> {
        self.shared.state.lock().expect("ranges state").error.take()
    }

    /// The object's key.
    pub fn key(&self) -> &str {
        &self.shared.key
    }

    /// `s3://bucket/key`.
    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.shared.bucket, self.shared.key)
    }
}

impl Drop for ObjectRanges {
    fn drop(&mut self) {
        for t in self.tasks.lock().expect("ranges tasks").drain(..) {
            t.abort();
        }
    }
}

impl Shared {
    /// One ranged GET (resumed if cut) into memory.
    async fn get(&self, r: Range<u64>) -> Result<Vec<u8>, JobError> {
        if r.start >= r.end {
            return Ok(Vec::new());
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut buf = vec![0_u8; (r.end - r.start) as usize];
        let start = r.start;
        let fetched = &self.fetched;
        let mut sink = |off: u64, b: &[u8]| {
            let at = (off - start) as usize;
            buf[at..at + b.len()].copy_from_slice(b);
            fetched.fetch_add(b.len() as u64, Ordering::Relaxed);
            Ok(())
        };
        let sink: &mut PartSink<'_> = &mut sink;
        let what = format!("bytes {}-{}", r.start, r.end - 1);
        get_part(
            &self.client,
            &self.bucket,
            &self.key,
            self.etag.as_deref(),
            sink,
            (r.start, r.end - 1),
            &self.timeouts,
            &what,
        )
        .await?;
        Ok(buf)
    }

    /// Records the first failure and wakes every waiting `take`.
    fn fail(&self, e: JobError) -> io::Error {
        let msg = e.to_string();
        let mut st = self.state.lock().expect("ranges state");
        if st.failed.is_none() {
            st.failed = Some(msg.clone());
            st.error = Some(e);
        }
        drop(st);
        self.arrived.notify_all();
        io::Error::other(msg)
    }

    fn arrive(&self, req: &Arc<Request>, bytes: Vec<u8>) {
        let mut st = self.state.lock().expect("ranges state");
        for m in &req.members {
            let at = (m.start - req.span.start) as usize;
            let b = bytes[at..at + (m.end - m.start) as usize].to_vec();
            st.ready
                .entry((m.start, m.end))
                .or_default()
                .push((b, Arc::clone(req)));
        }
        drop(st);
        self.arrived.notify_all();
    }
}

/// Groups ranges (in the order given) into GETs: a range joins the previous GET when it starts
/// inside it or at most `gap` bytes after its end and the GET stays within `max_request` bytes.
/// Every range, even an empty one, is a member of exactly one group.
fn coalesce(
    ranges: &[Range<u64>],
    gap: u64,
    max_request: u64,
) -> Vec<(Range<u64>, Vec<Range<u64>>)> {
    let mut out: Vec<(Range<u64>, Vec<Range<u64>>)> = Vec::new();
    for r in ranges {
        if let Some((span, members)) = out.last_mut()
            && r.start >= span.start
            && r.start <= span.end.saturating_add(gap)
            && r.end.max(span.end) - span.start <= max_request
        {
            span.end = span.end.max(r.end);
            members.push(r.clone());
            continue;
        }
        out.push((r.clone(), vec![r.clone()]));
    }
    out
}

impl RemoteFile for ObjectRanges {
    fn size(&self) -> u64 {
        self.shared.size
    }

    fn read(&self, ranges: &[Range<u64>]) -> io::Result<Vec<Vec<u8>>> {
        let sh = &self.shared;
        if let Some(r) = ranges.iter().find(|r| r.start > r.end || r.end > sh.size) {
            return Err(io::Error::other(format!(
                "bytes {r:?} lie past the end of the object ({} bytes)",
                sh.size
            )));
        }
        // Neighbours (in file order) within the gap share a GET.
        let mut order: Vec<usize> = (0..ranges.len()).collect();
        order.sort_by_key(|&i| ranges[i].start);
        let sorted: Vec<Range<u64>> = order.iter().map(|&i| ranges[i].clone()).collect();
        let groups = coalesce(&sorted, sh.opts.gap, sh.opts.max_request);
        // A range longer than a request (a small file read whole) is read in parts, in
        // parallel, as a download is.
        let conc = Arc::new(Semaphore::new(sh.opts.concurrency));
        let part = sh.opts.max_request.max(1);
        let gets = groups.iter().map(|(span, _)| {
            let parts = (span.start..span.end.max(span.start + 1))
                .step_by(part as usize)
                .map(|s| s..(s + part).min(span.end));
            let conc = Arc::clone(&conc);
            async move {
                let bodies = try_join_all(parts.map(|p| {
                    let conc = Arc::clone(&conc);
                    async move {
                        let _slot = conc.acquire().await.expect("not closed");
                        sh.get(p).await
                    }
                }))
                .await?;
                Ok::<_, JobError>(bodies.concat())
            }
        });
        let bodies = self
            .rt
            .block_on(try_join_all(gets))
            .map_err(|e| sh.fail(e))?;
        let mut out = vec![Vec::new(); ranges.len()];
        let mut k = 0;
        for ((span, members), body) in groups.iter().zip(&bodies) {
            for m in members {
                let at = (m.start - span.start) as usize;
                out[order[k]] = body[at..at + (m.end - m.start) as usize].to_vec();
                k += 1;
            }
        }
        Ok(out)
    }

    fn read_whole_below(&self) -> u64 {
        self.shared.opts.whole_below
    }

    fn prefetch(&self, ranges: &[Range<u64>]) {
        let sh = Arc::clone(&self.shared);
        {
            let mut st = sh.state.lock().expect("ranges state");
            for r in ranges {
                *st.pending.entry((r.start, r.end)).or_default() += 1;
            }
        }
        let requests: Vec<Arc<Request>> = coalesce(ranges, sh.opts.gap, sh.opts.max_request)
            .into_iter()
            .map(|(span, members)| {
                let cost = (span.end - span.start).min(sh.opts.window) as u32;
                Arc::new(Request {
                    left: AtomicUsize::new(members.len()),
                    span,
                    members,
                    cost,
                })
            })
            .collect();
        tracing::debug!(
            ranges = ranges.len(),
            gets = requests.len(),
            bytes = requests
                .iter()
                .map(|r| r.span.end - r.span.start)
                .sum::<u64>(),
            "prefetch"
        );
        let rt = self.rt.clone();
        let driver_tasks = Arc::clone(&self.tasks);
        let driver = self.rt.spawn(async move {
            let conc = Arc::new(Semaphore::new(sh.opts.concurrency));
            for req in requests {
                // In announce order: first the window's bytes (the decoder frees them), then a
                // connection slot.
                let Ok(w) = sh.window.acquire_many(req.cost).await else {
                    return;
                };
                w.forget();
                let Ok(slot) = Arc::clone(&conc).acquire_owned().await else {
                    return;
                };
                let sh = Arc::clone(&sh);
                let t = rt.spawn(async move {
                    let _slot = slot;
                    match sh.get(req.span.clone()).await {
                        Ok(bytes) => sh.arrive(&req, bytes),
                        Err(e) => {
                            sh.fail(e);
                        }
                    }
                });
                let mut tasks = driver_tasks.lock().expect("ranges tasks");
                tasks.retain(|t| !t.is_finished());
                tasks.push(t.abort_handle());
            }
        });
        self.tasks
            .lock()
            .expect("ranges tasks")
            .push(driver.abort_handle());
    }

    fn take(&self, range: Range<u64>) -> io::Result<Vec<u8>> {
        let sh = &self.shared;
        let k = (range.start, range.end);
        let mut st = sh.state.lock().expect("ranges state");
        if !st.pending.contains_key(&k) {
            return Err(io::Error::other(format!(
                "bytes {range:?} were not announced"
            )));
        }
        loop {
            if let Some(list) = st.ready.get_mut(&k)
                && let Some((bytes, req)) = list.pop()
            {
                if list.is_empty() {
                    st.ready.remove(&k);
                }
                let left = st.pending.get_mut(&k).expect("checked");
                *left -= 1;
                if *left == 0 {
                    st.pending.remove(&k);
                }
                drop(st);
                if req.left.fetch_sub(1, Ordering::AcqRel) == 1 {
                    sh.window.add_permits(req.cost as usize);
                }
                return Ok(bytes);
            }
            if let Some(msg) = &st.failed {
                return Err(io::Error::other(msg.clone()));
            }
            st = sh.arrived.wait(st).expect("ranges state");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_join_one_get_within_the_gap_and_size() {
        let r = [0..10, 12..20, 40..50, 50..60, 100..200];
        let got = coalesce(&r, 5, 1000);
        let spans: Vec<_> = got.iter().map(|(s, m)| (s.clone(), m.len())).collect();
        assert_eq!(spans, vec![(0..20, 2), (40..60, 2), (100..200, 1)]);
        let got = coalesce(&r, 100, 50);
        let spans: Vec<_> = got.iter().map(|(s, _)| s.clone()).collect();
        assert_eq!(spans, vec![0..50, 50..60, 100..200]);
        // Out of order: a range before the previous one starts a new GET.
        let got = coalesce(&[10..20, 0..5], 100, 1000);
        assert_eq!(got.len(), 2);
        // Overlapping and repeated ranges share one.
        let got = coalesce(&[0..10, 5..8, 5..8, 9..30], 0, 1000);
        assert_eq!(got, vec![(0..30, vec![0..10, 5..8, 5..8, 9..30])]);
    }
}
