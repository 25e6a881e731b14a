//! Shared helpers: the local services, unique names, fixture uploads, queue and DB checks.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use clap::Parser;
use worker::cli::{Cli, Command};
use worker::config::{
    AwsConfig, AwsTimeouts, DbConfig, PipelineConfig, QueueRef, S3Access, Schema,
};
use worker::consumer::RunConfig;

/// Addresses of the local services.
#[derive(Clone, Debug)]
pub struct Env {
    pub db_url: String,
    pub endpoint: String,
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The services' addresses, or `None` (after printing `SKIPPED: …`) outside CI.
pub fn env() -> Option<Env> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (
        get("NEXINGEST_DATABASE_URL"),
        get("NEXINGEST_AWS_ENDPOINT_URL"),
    ) {
        (Some(db_url), Some(endpoint)) => Some(Env { db_url, endpoint }),
        _ if in_ci() => panic!(
            "NEXINGEST_DATABASE_URL / NEXINGEST_AWS_ENDPOINT_URL unset under CI=true; run `make test`"
        ),
        _ => {
            eprintln!(
                "SKIPPED: NEXINGEST_DATABASE_URL / NEXINGEST_AWS_ENDPOINT_URL not set (run `make test`)"
            );
            None
        }
    }
}

/// The TLS test setup of `scripts/services.sh` (ssl = on, a throwaway CA, a server certificate
/// for `localhost` only, and a role admitted only over TLS).
#[derive(Clone, Debug)]
pub struct TlsEnv {
    /// The main role's URL (`127.0.0.1`, no TLS settings).
    pub db_url: String,
    /// `postgres://nexingest_tls:PASSWORD@localhost:PORT/DB?hostaddr=127.0.0.1`: the
    /// hostssl-only role (`localhost` is the name the certificate is checked against).
    pub tls_url: String,
    /// The CA that signed the server certificate.
    pub ca: PathBuf,
    /// A CA that did not.
    pub other_ca: PathBuf,
}

/// The TLS setup, or `None` (after printing `SKIPPED: …`) outside CI.
pub fn tls_env() -> Option<TlsEnv> {
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let keys = [
        "NEXINGEST_DATABASE_URL",
        "NEXINGEST_TEST_TLS_URL",
        "NEXINGEST_TEST_CA",
        "NEXINGEST_TEST_OTHER_CA",
    ];
    match keys.map(get) {
        [Some(db_url), Some(tls_url), Some(ca), Some(other_ca)] => Some(TlsEnv {
            db_url,
            tls_url,
            ca: ca.into(),
            other_ca: other_ca.into(),
        }),
        _ if in_ci() => panic!("{} unset under CI=true; run `make test`", keys.join(" / ")),
        _ => {
            eprintln!(
                "SKIPPED: {} not set (run `make test`, or eval \"$(scripts/services.sh env)\")",
                keys.join(" / ")
            );
            None
        }
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call: `{prefix}-{pid}-{n}-{nanos}` (lower case).
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos % 100_000
    )
}

/// One test's world: its schema, bucket(s), queue + DLQ.
pub struct World {
    pub env: Env,
    pub schema: String,
    pub bucket: String,
    pub geo_bucket: String,
    pub queue: String,
    pub queue_url: String,
    pub dlq_url: String,
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub pg: tokio_postgres::Client,
}

pub fn aws_config(env: &Env, bucket: &str, geo_bucket: &str) -> AwsConfig {
    AwsConfig {
        endpoint_url: Some(env.endpoint.clone()),
        nex_gddp_bucket: bucket.into(),
        loca_bucket: bucket.into(),
        cmip6_bucket: bucket.into(),
        allowed_buckets: [bucket.to_owned(), geo_bucket.to_owned()]
            .into_iter()
            .collect(),
        timeouts: AwsTimeouts::default(),
        s3: S3Access {
            // moto, like S3, refuses a CreateBucket without a location constraint outside
            // us-east-1: the test buckets are made in the environment's region.
            region: std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()),
            no_sign_request: false,
        },
    }
}

impl World {
    /// Creates a migrated schema, buckets and a queue with a DLQ.
    pub async fn new(env: Env, name: &str, max_receive_count: u32, queue_visibility: u32) -> World {
        let id = unique(name);
        let schema = format!("t_{}", id.replace('-', "_"));
        let bucket = format!("b-{id}");
        let geo_bucket = format!("g-{id}");
        let db = DbConfig {
            url: env.db_url.clone(),
            schema: Schema::new(&schema).unwrap(),
        };
        worker::cmd::migrate::run(&db).await.expect("migrate");
        let clients = worker::aws::clients(&aws_config(&env, &bucket, &geo_bucket)).await;
        for b in [&bucket, &geo_bucket] {
            clients
                .s3
                .create_bucket()
                .bucket(b)
                .send()
                .await
                .expect("create bucket");
        }
        let queue = format!("q-{id}");
        let (queue_url, dlq_url) = worker::queue::create_with_dlq(
            &clients.sqs,
            &queue,
            &format!("{queue}-dlq"),
            max_receive_count,
            queue_visibility,
        )
        .await
        .expect("create queue");
        let pg = worker::db::connect(&env.db_url).await.expect("connect");
        pg.batch_execute(&format!("SET search_path TO {schema}"))
            .await
            .unwrap();
        World {
            env,
            schema,
            bucket,
            geo_bucket,
            queue,
            queue_url,
            dlq_url,
            s3: clients.s3,
            sqs: clients.sqs,
            pg,
        }
    }

    pub fn db(&self) -> DbConfig {
        DbConfig {
            url: self.env.db_url.clone(),
            schema: Schema::new(&self.schema).unwrap(),
        }
    }

    pub fn aws(&self) -> AwsConfig {
        aws_config(&self.env, &self.bucket, &self.geo_bucket)
    }

    /// A consumer configuration for this world (short waits, `until_empty`).
    pub fn run_config(&self) -> RunConfig {
        RunConfig {
            db: self.db(),
            aws: self.aws(),
            queue: QueueRef::Url(self.queue_url.clone()),
            pipeline: PipelineConfig {
                memory_budget: 1 << 30,
                work_dir: std::env::temp_dir(),
                download_concurrency: 4,
                download_part: 64 * 1024,
                stream: true,
                range_gap: 64 * 1024,
                search_radius_km: 50.0,
                job_timeout: Duration::from_secs(120),
                max_db_loads: None,
            },
            jobs: 2,
            visibility_timeout: Duration::from_secs(30),
            wait_time: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(10),
            until_empty: true,
            max_attempts: 2,
            failed_visibility: Duration::ZERO,
            retry_visibility: Duration::from_secs(30),
            retry_visibility_max: Duration::from_secs(900),
            worker_id: "test".into(),
            metrics: worker::metrics::MetricsFormat::None,
            metrics_namespace: "nexingest".into(),
            event_locations: worker::message::LocationSource::Cities(None),
        }
    }

    /// Uploads the committed fixture files of one job (`MANIFEST.json` rows) under their real
    /// keys; `replace` swaps a file for another (e.g. the corrupt one).
    pub async fn upload_job(
        &self,
        dataset: &str,
        model: &str,
        year: i64,
        replace: Option<(&str, PathBuf)>,
    ) {
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(fixtures::data_dir().join("MANIFEST.json")).unwrap(),
        )
        .unwrap();
        let mut n = 0;
        for f in manifest["files"].as_array().unwrap() {
            if f["kind"] != "dataset"
                || f["dataset"] != dataset
                || f["model"] != model
                || f["year"] != year
            {
                continue;
            }
            let var = f["var"].as_str().unwrap();
            let path = match &replace {
                Some((v, p)) if *v == var => p.clone(),
                _ => fixtures::data_dir().join(f["path"].as_str().unwrap()),
            };
            let body = aws_sdk_s3::primitives::ByteStream::from_path(&path)
                .await
                .unwrap();
            self.s3
                .put_object()
                .bucket(&self.bucket)
                .key(f["s3_key"].as_str().unwrap())
                .body(body)
                .send()
                .await
                .expect("upload");
            n += 1;
        }
        assert_eq!(n, 3, "fixture files of {dataset} {model} {year}");
    }

    /// Uploads the NEX-GDDP-CMIP6 ssp245 CanESM5 2016 job with the corrupt `tasmax` fixture
    /// (the operator's "fix" is `upload_job(…, None)`).
    pub async fn upload_with_corrupt_tasmax(&self) {
        let corrupt = fixtures::data_dir()
            .join("corrupt")
            .join("tasmax_day_CanESM5_ssp245_r1i1p1f1_gn_2016.nc");
        self.upload_job("NEX-GDDP-CMIP6", "CanESM5", 2016, Some(("tasmax", corrupt)))
            .await;
    }

    /// Runs `nexingest … enqueue …` through the real CLI parser against this world; returns
    /// the number of jobs enqueued.
    pub async fn enqueue(&self, args: &[&str]) -> usize {
        self.enqueue_report(args).await.enqueued
    }

    /// Enqueues the one job `(dataset, scenario, model, year)` with `more` flags; returns the
    /// number of jobs enqueued.
    pub async fn enqueue_job(&self, job: (&str, &str, &str, i64), more: &[&str]) -> usize {
        let (dataset, scenario, model, year) = job;
        let year = year.to_string();
        let mut args = vec![
            "--dataset",
            dataset,
            "--scenario",
            scenario,
            "--models",
            model,
            "--years",
            &year,
        ];
        args.extend_from_slice(more);
        self.enqueue(&args).await
    }

    /// [`World::enqueue`] with its whole report (input check, skipped jobs).
    pub async fn enqueue_report(&self, args: &[&str]) -> worker::producer::EnqueueReport {
        let mut argv: Vec<String> = vec![
            "nexingest".into(),
            "--database-url".into(),
            self.env.db_url.clone(),
            "--schema".into(),
            self.schema.clone(),
            "enqueue".into(),
            "--queue-url".into(),
            self.queue_url.clone(),
            "--aws-endpoint-url".into(),
            self.env.endpoint.clone(),
            "--nex-gddp-bucket".into(),
            self.bucket.clone(),
            "--loca-bucket".into(),
            self.bucket.clone(),
            "--cmip6-bucket".into(),
            self.bucket.clone(),
            "--allowed-buckets".into(),
            self.geo_bucket.clone(),
        ];
        argv.extend(args.iter().map(|s| (*s).to_owned()));
        let cli = Cli::try_parse_from(argv).expect("enqueue flags");
        let Command::Enqueue(a) = &cli.command else {
            unreachable!()
        };
        let cfg =
            worker::producer::EnqueueConfig::from_args(&cli.global, a).expect("enqueue config");
        worker::producer::enqueue(&cfg).await.expect("enqueue")
    }

    pub async fn send_raw(&self, bodies: &[&str]) {
        let bodies: Vec<String> = bodies.iter().map(|s| (*s).to_owned()).collect();
        worker::queue::send_all(&self.sqs, &self.queue_url, &bodies)
            .await
            .unwrap();
    }

    /// Messages currently receivable from a queue (received with a long visibility so a
    /// second call does not see them again).
    pub async fn drain_queue(&self, url: &str, wait: i32) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let r = self
                .sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .wait_time_seconds(wait)
                .visibility_timeout(600)
                .send()
                .await
                .unwrap();
            let msgs = r.messages.unwrap_or_default();
            if msgs.is_empty() {
                return out;
            }
            out.extend(msgs.into_iter().filter_map(|m| m.body));
        }
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.pg.query_one(sql, &[]).await.unwrap().get::<_, i64>(0)
    }

    /// Runs `body` (PL/pgSQL statements; `NEW` is the row) before every row insert into
    /// `climate_data_year`, through a trigger and a function both called `name`: a slow or
    /// failing database on demand.
    pub async fn before_each_insert(&self, name: &str, body: &str) {
        self.pg
            .batch_execute(&format!(
                "CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN
                   {body}
                   RETURN NEW;
                 END $$;
                 CREATE TRIGGER {name} BEFORE INSERT ON climate_data_year
                   FOR EACH ROW EXECUTE FUNCTION {name}();"
            ))
            .await
            .unwrap();
    }

    /// Makes every row of `climate_data_year` insert take `secs` (a real, slow database).
    pub async fn slow_inserts(&self, secs: f64) {
        self.before_each_insert("slow_insert", &format!("PERFORM pg_sleep({secs});"))
            .await;
    }

    /// Imports the fixture cities (`geojson/cities.geojson`, source `cities`) through the real
    /// CLI parser; returns how many locations it holds.
    pub async fn import_cities(&self) -> i64 {
        let cli = <worker::cli::Cli as clap::Parser>::try_parse_from([
            "nexingest",
            "import-locations",
            fixtures::data_dir()
                .join("geojson/cities.geojson")
                .to_str()
                .unwrap(),
            "--source",
            "cities",
        ])
        .unwrap();
        let worker::cli::Command::ImportLocations(a) = &cli.command else {
            unreachable!()
        };
        let r = worker::cmd::import_locations::run(&self.db(), &self.aws(), a)
            .await
            .unwrap();
        (r.inserted + r.updated) as i64
    }

    /// Drops the schema (best effort).
    pub async fn cleanup(self) {
        let _ = self
            .pg
            .batch_execute(&format!(
                "SET lock_timeout = '20s'; DROP SCHEMA {} CASCADE",
                self.schema
            ))
            .await;
    }
}

/// Runs the consumer in-process on `cfg` until its queue is empty (at most 150 s).
pub async fn consume(cfg: RunConfig) -> worker::consumer::RunSummary {
    tokio::time::timeout(
        Duration::from_secs(150),
        worker::consumer::run(cfg, std::future::pending()),
    )
    .await
    .expect("consumer finished in time")
    .expect("consumer ran")
}

/// Waits for a worker process (at most 180 s); returns (stdout, stderr) after checking it
/// succeeded.
pub async fn finished(c: tokio::process::Child) -> (String, String) {
    let out = tokio::time::timeout(Duration::from_secs(180), c.wait_with_output())
        .await
        .expect("worker finished in time")
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "worker failed:\n{stderr}");
    (stdout, stderr)
}

/// A `nexingest` child process command whose child inherits no file descriptor but stdin,
/// stdout and stderr. Tests run in parallel threads of one process, and libnetcdf/HDF5 open
/// files without `O_CLOEXEC`: a child forked while another test was writing a NetCDF file
/// would keep that file's descriptor — and HDF5's `flock` on it — for its whole life, and the
/// writer's later read of the file would fail (`NetCDF: HDF error`).
pub fn nexingest() -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_nexingest"));
    // SAFETY: `close_inherited` only makes an async-signal-safe system call.
    unsafe {
        c.pre_exec(close_inherited);
    }
    c
}

/// In a forked child before `exec`: closes every descriptor above stderr.
fn close_inherited() -> std::io::Result<()> {
    // SAFETY: a plain system call on the child's own descriptor table.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    Ok(())
}

/// [`nexingest`] for blocking use (`std::process`), with the same descriptor hygiene.
pub fn nexingest_blocking() -> std::process::Command {
    use std::os::unix::process::CommandExt as _;
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_nexingest"));
    // SAFETY: as in `nexingest`.
    unsafe {
        c.pre_exec(close_inherited);
    }
    c
}

impl World {
    /// A `nexingest [global…] run --until-empty` process on the world's queue and buckets,
    /// then `extra` run flags; stdout and stderr captured, killed when dropped.
    pub fn spawn_worker(&self, global: &[&str], extra: &[&str]) -> tokio::process::Child {
        nexingest()
            .args(["--schema", &self.schema])
            .args(global)
            .arg("run")
            .args([
                "--queue-url",
                &self.queue_url,
                "--aws-endpoint-url",
                &self.env.endpoint,
                "--nex-gddp-bucket",
                &self.bucket,
                "--cmip6-bucket",
                &self.bucket,
                "--wait-time",
                "1",
                "--until-empty",
            ])
            .args(extra)
            .env("NEXINGEST_DATABASE_URL", &self.env.db_url)
            .env_remove("RUST_LOG")
            .env_remove("NEXINGEST_LOG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    }

    /// The state of the world's (only) data source.
    pub async fn state(&self) -> String {
        self.pg
            .query_one("SELECT state FROM data_source", &[])
            .await
            .unwrap()
            .get(0)
    }
}
