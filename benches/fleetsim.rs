//! A fleet's wall time from per-job measurements: a seeded discrete-event simulation of the
//! queue consumer (DESIGN §5) on N hosts.
//!
//! Each host has a network link and CPU cores, shared by the jobs it runs at once (`K`, `run
//! --jobs`); the fleet shares the S3 request rate and the database's load slots
//! (`--max-db-loads`). A job is what the worker does today: its variables' files one after
//! the other from S3, variable *i + 1* downloading while variable *i* decodes (the pipeline's
//! overlap), then one load. Sharing is fluid (processor sharing): the jobs fetching on a host
//! split its link equally, each capped at what one job's ranged GETs reach on their own; the
//! jobs decoding split its cores, each capped at its own parallelism; a load holds a slot for
//! its measured database time. A host takes the next job from the one queue when one of its
//! `K` jobs ends, as `run` does.
//!
//! Streaming input (decode while the bytes arrive) would make a job's variable cost
//! `max(transfer, inflate)` instead of its sum; [`Host::overlap`] models it, so the same
//! figures predict both.
//!
//! ```
//! use nexingest_benches::fleetsim::{Fleet, Host, JobCost, simulate};
//!
//! // 40 jobs of 3 files of 100 MB, 1 CPU second each; 2 hosts of 100 MB/s, 4 jobs each.
//! let job = JobCost { files: vec![(100e6, 1.0); 3], db_s: 0.1 };
//! let fleet = Fleet {
//!     hosts: 2,
//!     host: Host { link: 100e6, cores: 8.0, jobs: 4, job_fetch_cap: 1e12, decode_par: 8.0, overlap: false },
//!     db_slots: 4,
//!     s3_rate: f64::INFINITY,
//! };
//! let p = simulate(&vec![job; 40], &fleet, 1);
//! // 12 GB over 200 MB/s of links: at least 60 s, and the links are the bound.
//! assert!(p.wall_s >= 60.0 && p.wall_s < 66.0, "{}", p.wall_s);
//! assert_eq!(p.bound(), "the hosts' links");
//! ```

/// What one job costs, measured (bytes and CPU per file, database seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct JobCost {
    /// Per variable file, in the order the job reads them: (bytes fetched, CPU seconds of
    /// decoding it).
    pub files: Vec<(f64, f64)>,
    /// Seconds the load holds a database slot (COPY and commit).
    pub db_s: f64,
}

/// One host (an ECS task on an instance).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Host {
    /// Link rate, bytes per second.
    pub link: f64,
    /// CPU cores for decoding.
    pub cores: f64,
    /// Jobs run at once (`run --jobs`).
    pub jobs: usize,
    /// The fetch rate one job reaches on its own (its parallel ranged GETs), bytes per second.
    pub job_fetch_cap: f64,
    /// Cores one decode uses at most (rayon inside nexdecode).
    pub decode_par: f64,
    /// Decode while the bytes arrive: a file's time is `max(transfer, decode)`, not the sum.
    pub overlap: bool,
}

/// A fleet of identical hosts against one S3 and one database.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fleet {
    /// Hosts (instances, or worker processes).
    pub hosts: usize,
    /// Each host.
    pub host: Host,
    /// Database load slots (`--max-db-loads`; the fleet's concurrent loads).
    pub db_slots: usize,
    /// S3's rate for the fleet, bytes per second (per-prefix request rate × part size ×
    /// prefixes; `INFINITY`: no limit).
    pub s3_rate: f64,
}

/// What the simulation predicts.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Wall time from the first receive to the last commit, seconds.
    pub wall_s: f64,
    /// Jobs done.
    pub jobs: usize,
    /// Mean fraction of the hosts' link capacity in use.
    pub link_busy: f64,
    /// Mean fraction of the hosts' cores in use.
    pub cpu_busy: f64,
    /// Mean fraction of the database's slots in use.
    pub db_busy: f64,
    /// Mean fraction of S3's rate in use (0 without a limit).
    pub s3_busy: f64,
}

impl Prediction {
    /// The resource closest to saturation over the run.
    pub fn bound(&self) -> &'static str {
        let all = [
            (self.link_busy, "the hosts' links"),
            (self.cpu_busy, "the hosts' cores"),
            (self.db_busy, "the database's load slots"),
            (self.s3_busy, "S3's request rate"),
        ];
        all.iter()
            .fold(
                (f64::MIN, ""),
                |best, &(v, n)| if v > best.0 { (v, n) } else { best },
            )
            .1
    }
}

/// Where a running job is.
#[derive(Debug, Clone)]
struct Running {
    job: usize,
    host: usize,
    /// Next file to fetch.
    fetch_i: usize,
    /// Bytes left of the file being fetched (`fetch_i`), when fetching.
    fetch_left: Option<f64>,
    /// Next file to decode.
    decode_i: usize,
    /// CPU seconds left of the file being decoded, when decoding.
    decode_left: Option<f64>,
    /// Seconds left of the load, when loading; `Some(_)` only while holding a slot.
    load_left: Option<f64>,
    /// Waiting for a database slot.
    waiting_slot: bool,
    /// Streaming: the file `fetch_i` is being transferred and decoded.
    in_file: bool,
}

/// A small deterministic generator (splitmix64) for the jitter.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Simulates `jobs` (in queue order, each jittered by ±5 % with `seed`) on `fleet`.
///
/// # Panics
/// When the fleet has no hosts, no jobs per host or no database slot.
pub fn simulate(jobs: &[JobCost], fleet: &Fleet, seed: u64) -> Prediction {
    assert!(fleet.hosts > 0 && fleet.host.jobs > 0 && fleet.db_slots > 0);
    let mut rng = Rng(seed);
    let jobs: Vec<JobCost> = jobs
        .iter()
        .map(|j| {
            let f = 0.95 + 0.1 * rng.next();
            JobCost {
                files: j.files.iter().map(|&(b, c)| (b * f, c * f)).collect(),
                db_s: j.db_s * f,
            }
        })
        .collect();
    let h = fleet.host;
    let mut next_job = 0usize;
    let mut running: Vec<Running> = Vec::new();
    let mut slots_used = 0usize;
    let mut slot_queue: std::collections::VecDeque<usize> = Default::default();
    let (mut t, mut done) = (0.0f64, 0usize);
    let (mut link_used, mut cpu_used, mut db_used) = (0.0, 0.0, 0.0);
    let start = |job: usize, host: usize| Running {
        job,
        host,
        fetch_i: 0,
        fetch_left: None,
        decode_i: 0,
        decode_left: None,
        load_left: None,
        waiting_slot: false,
        in_file: false,
    };
    // Every host takes its first K jobs, in turn.
    for _ in 0..h.jobs {
        for host in 0..fleet.hosts {
            if next_job < jobs.len() {
                running.push(start(next_job, host));
                next_job += 1;
            }
        }
    }
    loop {
        // Start what can start: fetches (one file at a time per job), decodes, slot waits.
        for r in running.iter_mut() {
            let j = &jobs[r.job];
            if r.fetch_left.is_none() && r.fetch_i < j.files.len() && !h.overlap {
                r.fetch_left = Some(j.files[r.fetch_i].0);
            }
            if h.overlap && !r.in_file && r.fetch_i < j.files.len() {
                // Streaming: the file's transfer and its decode run together.
                r.in_file = true;
                r.fetch_left = Some(j.files[r.fetch_i].0);
                r.decode_left = Some(j.files[r.fetch_i].1);
            }
            if !h.overlap && r.decode_left.is_none() && r.decode_i < r.fetch_i {
                r.decode_left = Some(j.files[r.decode_i].1);
            }
            if r.decode_i == j.files.len() && r.load_left.is_none() && !r.waiting_slot {
                r.waiting_slot = true;
                slot_queue.push_back(r.job);
            }
        }
        while slots_used < fleet.db_slots {
            let Some(job) = slot_queue.pop_front() else {
                break;
            };
            let r = running
                .iter_mut()
                .find(|r| r.job == job)
                .expect("queued job runs");
            r.waiting_slot = false;
            r.load_left = Some(jobs[job].db_s);
            slots_used += 1;
        }
        if running.is_empty() {
            break;
        }
        // Rates: per host, the link split among its fetching jobs and the cores among its
        // decoding ones; the fleet's fetches capped by S3's rate.
        let mut fetching = vec![0usize; fleet.hosts];
        let mut decoding = vec![0usize; fleet.hosts];
        for r in &running {
            fetching[r.host] += r.fetch_left.is_some() as usize;
            decoding[r.host] += r.decode_left.is_some() as usize;
        }
        let fetch_rate = |host: usize| (h.link / fetching[host] as f64).min(h.job_fetch_cap);
        let total_fetch: f64 = (0..fleet.hosts)
            .filter(|&x| fetching[x] > 0)
            .map(|x| fetch_rate(x) * fetching[x] as f64)
            .sum();
        let s3_scale = if total_fetch > fleet.s3_rate {
            fleet.s3_rate / total_fetch
        } else {
            1.0
        };
        let decode_rate = |host: usize| (h.cores / decoding[host] as f64).min(h.decode_par);
        // The next event.
        let mut dt = f64::INFINITY;
        for r in &running {
            if let Some(b) = r.fetch_left {
                dt = dt.min(b / (fetch_rate(r.host) * s3_scale));
            }
            if let Some(c) = r.decode_left {
                dt = dt.min(c / decode_rate(r.host));
            }
            if let Some(l) = r.load_left {
                dt = dt.min(l);
            }
        }
        assert!(dt.is_finite(), "the simulation is stuck");
        let dt = dt.max(0.0);
        t += dt;
        link_used += dt * total_fetch * s3_scale;
        db_used += dt * slots_used as f64;
        for (host, &n) in decoding.iter().enumerate() {
            if n > 0 {
                cpu_used += dt * decode_rate(host) * n as f64;
            }
        }
        // Advance and complete.
        let eps = 1e-9;
        let mut finished = Vec::new();
        for (k, r) in running.iter_mut().enumerate() {
            let nf = jobs[r.job].files.len();
            if let Some(b) = r.fetch_left.as_mut() {
                *b -= dt * fetch_rate(r.host) * s3_scale;
            }
            if let Some(c) = r.decode_left.as_mut() {
                *c -= dt * decode_rate(r.host);
            }
            if h.overlap {
                if r.fetch_left
                    .is_some_and(|b| b <= eps * jobs[r.job].files[r.fetch_i].0.max(1.0))
                {
                    r.fetch_left = None;
                }
                if r.decode_left.is_some_and(|c| c <= eps) {
                    r.decode_left = None;
                }
                if r.in_file && r.fetch_left.is_none() && r.decode_left.is_none() {
                    r.in_file = false;
                    r.fetch_i += 1;
                    r.decode_i += 1;
                }
            } else {
                if r.fetch_left
                    .is_some_and(|b| b <= eps * jobs[r.job].files[r.fetch_i].0.max(1.0))
                {
                    r.fetch_left = None;
                    r.fetch_i += 1;
                }
                if r.decode_left.is_some_and(|c| c <= eps) {
                    r.decode_left = None;
                    r.decode_i += 1;
                }
            }
            if let Some(l) = r.load_left.as_mut() {
                *l -= dt;
                if *l <= eps {
                    r.load_left = None;
                    finished.push(k);
                    debug_assert_eq!(r.decode_i, nf);
                }
            }
        }
        // A finished job frees its slot, and its host takes the next job from the queue.
        for &k in finished.iter().rev() {
            let r = running.swap_remove(k);
            slots_used -= 1;
            done += 1;
            if next_job < jobs.len() {
                running.push(start(next_job, r.host));
                next_job += 1;
            }
        }
    }
    let cap = |x: f64| if t > 0.0 { x / t } else { 0.0 };
    Prediction {
        wall_s: t,
        jobs: done,
        link_busy: cap(link_used / (h.link * fleet.hosts as f64)),
        cpu_busy: cap(cpu_used / (h.cores * fleet.hosts as f64)),
        db_busy: cap(db_used / fleet.db_slots as f64),
        s3_busy: if fleet.s3_rate.is_finite() {
            cap(link_used / fleet.s3_rate)
        } else {
            0.0
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(link: f64, cores: f64, jobs: usize, overlap: bool) -> Host {
        Host {
            link,
            cores,
            jobs,
            job_fetch_cap: f64::INFINITY,
            decode_par: cores,
            overlap,
        }
    }

    fn fleet(hosts: usize, host: Host, db_slots: usize) -> Fleet {
        Fleet {
            hosts,
            host,
            db_slots,
            s3_rate: f64::INFINITY,
        }
    }

    #[test]
    fn one_job_is_the_sum_of_its_stages_without_overlap() {
        // Two files: fetch 1 s each, decode 2 s each, load 0.5 s. Fetch 2 runs while file 1
        // decodes: 1 + 2 + 2 + 0.5.
        let j = JobCost {
            files: vec![(100.0, 2.0), (100.0, 2.0)],
            db_s: 0.5,
        };
        let p = simulate(
            std::slice::from_ref(&j),
            &fleet(1, host(100.0, 1.0, 1, false), 1),
            0,
        );
        let f = p.wall_s / 5.5;
        assert!((0.95..=1.05).contains(&f), "{}", p.wall_s);
        // Streaming: each file max(1, 2) = 2: 2 + 2 + 0.5.
        let p = simulate(&[j], &fleet(1, host(100.0, 1.0, 1, true), 1), 0);
        let f = p.wall_s / 4.5;
        assert!((0.95..=1.05).contains(&f), "{}", p.wall_s);
    }

    #[test]
    fn the_bound_is_named() {
        let j = JobCost {
            files: vec![(1000.0, 0.1)],
            db_s: 0.01,
        };
        let p = simulate(&vec![j; 100], &fleet(2, host(100.0, 4.0, 4, false), 8), 7);
        assert_eq!(p.bound(), "the hosts' links");
        assert!(p.link_busy > 0.9, "{p:?}");
        let j = JobCost {
            files: vec![(1.0, 4.0)],
            db_s: 0.01,
        };
        let p = simulate(&vec![j; 100], &fleet(2, host(100.0, 4.0, 4, false), 8), 7);
        assert_eq!(p.bound(), "the hosts' cores");
        let j = JobCost {
            files: vec![(1.0, 0.01)],
            db_s: 1.0,
        };
        let p = simulate(&vec![j; 100], &fleet(4, host(100.0, 4.0, 4, false), 2), 7);
        assert_eq!(p.bound(), "the database's load slots");
        assert!((p.wall_s / 50.0 - 1.0).abs() < 0.08, "{p:?}");
    }

    #[test]
    fn the_same_seed_gives_the_same_prediction() {
        let j = JobCost {
            files: vec![(500.0, 1.0); 3],
            db_s: 0.2,
        };
        let f = fleet(3, host(100.0, 2.0, 2, false), 2);
        assert_eq!(
            simulate(&vec![j.clone(); 50], &f, 3),
            simulate(&vec![j.clone(); 50], &f, 3)
        );
        assert_ne!(
            simulate(&vec![j.clone(); 50], &f, 3),
            simulate(&vec![j; 50], &f, 4)
        );
    }
}
