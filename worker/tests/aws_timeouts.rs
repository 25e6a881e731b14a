//! AWS timeouts against real stalled peers on loopback: a listener that accepts and never
//! answers, and one that answers an S3 `GetObject` with its headers and a few body bytes and
//! then stalls. The S3 calls must fail as transient `JobError::S3` naming the timeout within a
//! bound instead of hanging. A normal download through moto must still work with the
//! timeouts applied.
//!
//! The clients come from the standard credential chain, so these tests run only with
//! credentials and a region in the environment (`scripts/services.sh env`): the chain then
//! never looks for an instance-metadata endpoint off loopback.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use worker::catalog::Dataset;
use worker::config::{AwsConfig, AwsTimeouts};
use worker::error::JobError;

/// Upper bound on any test here; the timeouts under test are a few seconds.
const BOUND: Duration = Duration::from_secs(30);
/// How soon a timed-out call must return (small timeouts, SDK retries, slow CI).
const PROMPT: Duration = Duration::from_secs(12);

fn small_timeouts() -> AwsTimeouts {
    AwsTimeouts {
        connect: Duration::from_secs(1),
        read: Duration::from_secs(1),
        operation: Duration::from_secs(3),
        attempt: None,
    }
}

fn config(endpoint: String, timeouts: AwsTimeouts) -> AwsConfig {
    AwsConfig {
        endpoint_url: Some(endpoint),
        nex_gddp_bucket: "stalled".into(),
        loca_bucket: "stalled".into(),
        cmip6_bucket: "stalled".into(),
        allowed_buckets: ["stalled".to_owned()].into(),
        timeouts,
        s3: Default::default(),
    }
}

/// Whether credentials and a region come from the environment; otherwise `SKIPPED` (or a
/// failure under CI).
fn env_credentials() -> bool {
    let ok = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"]
        .iter()
        .all(|k| std::env::var(k).is_ok_and(|v| !v.is_empty()));
    if !ok {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1"),
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_REGION unset under CI=true"
        );
        eprintln!("SKIPPED: AWS credentials / region not in the environment (run `make test`)");
    }
    ok
}

/// A listener on loopback that accepts connections, reads what is sent and never answers.
async fn silent_peer() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while matches!(sock.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

/// Object size the stalling peer announces, and the bytes of it it sends before stalling.
const SIZE: usize = 4096;
const SENT: usize = 100;

/// A loopback HTTP/1.1 peer that answers `HEAD` like S3 (`Content-Length`, `ETag`) and `GET`
/// with its headers and the first `SENT` bytes of the body, then sends nothing more.
async fn stalling_peer() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(serve_stalling(sock));
        }
    });
    addr
}

async fn serve_stalling(mut sock: TcpStream) {
    let mut buf = Vec::new();
    loop {
        // One request head (these requests have no body).
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match sock.read(&mut chunk).await {
                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return,
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        let common = format!(
            "Content-Length: {SIZE}\r\nETag: \"0123456789abcdef\"\r\n\
             Content-Type: application/octet-stream\r\nx-amz-request-id: stall\r\n"
        );
        if head.starts_with("HEAD ") {
            let resp = format!("HTTP/1.1 200 OK\r\n{common}\r\n");
            if sock.write_all(resp.as_bytes()).await.is_err() {
                return;
            }
        } else {
            let resp = format!(
                "HTTP/1.1 206 Partial Content\r\n{common}Content-Range: bytes 0-{}/{SIZE}\r\n\r\n",
                SIZE - 1
            );
            let mut out = resp.into_bytes();
            out.extend_from_slice(&[7u8; SENT]);
            if sock.write_all(&out).await.is_err() || sock.flush().await.is_err() {
                return;
            }
            // Stall: keep the connection open, send nothing, until the client gives up.
            let mut sink = [0u8; 4096];
            while matches!(sock.read(&mut sink).await, Ok(n) if n > 0) {}
            return;
        }
    }
}

/// Runs `f`, which must fail within [`PROMPT`] as a transient S3 error naming one of
/// `flags`; returns the message.
async fn times_out<T: std::fmt::Debug>(
    what: &str,
    flags: &[&str],
    f: impl Future<Output = Result<T, JobError>>,
) -> String {
    let t = Instant::now();
    let r = tokio::time::timeout(BOUND, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: hung for {BOUND:?} despite the timeouts"));
    let took = t.elapsed();
    let e = r.expect_err(what);
    assert!(took < PROMPT, "{what}: took {took:?}: {e}");
    let JobError::S3 {
        bucket,
        message,
        transient,
        ..
    } = &e
    else {
        panic!("{what}: expected JobError::S3, got {e:?}");
    };
    assert!(transient, "{what}: a timeout is transient: {e}");
    assert!(e.is_transient());
    assert_eq!(bucket, "stalled");
    assert!(
        message.contains("timed out (") && flags.iter().any(|f| message.contains(f)),
        "{what}: message names the timeout and one of {flags:?}: {e}"
    );
    let text = e.to_string();
    assert!(text.starts_with("s3://stalled/"), "{text}");
    eprintln!("{what}: {took:?}: {text}");
    text
}

#[tokio::test]
async fn silent_peer_times_out_head_list_and_download() {
    if !env_credentials() {
        return;
    }
    let addr = silent_peer().await;
    let clients = worker::aws::clients(&config(format!("http://{addr}"), small_timeouts())).await;
    let s3 = &clients.s3;
    let call_flags = ["--aws-read-timeout", "--aws-operation-timeout"];

    // ListObjectsV2 (NEX-GDDP-CMIP6 keys are found by listing).
    let text = times_out(
        "resolve_key",
        &call_flags,
        worker::s3::resolve_key(
            s3,
            "stalled",
            Dataset::NexGddpCmip6,
            "ssp245",
            "ACCESS-CM2",
            2050,
            "tasmin",
        ),
    )
    .await;
    assert!(text.contains("NEX-GDDP-CMIP6/ACCESS-CM2/ssp245/"), "{text}");

    // HeadObject, the first call of a download.
    let dir = tempfile::tempdir().unwrap();
    let text = times_out(
        "download (HEAD)",
        &call_flags,
        worker::s3::download(
            s3,
            "stalled",
            "a/b.nc",
            &dir.path().join("b.nc"),
            1 << 20,
            2,
        ),
    )
    .await;
    assert!(text.starts_with("s3://stalled/a/b.nc: "), "{text}");

    // With room for the SDK's retries inside the operation timeout, each attempt ends at the
    // read timeout and the last one's error says so.
    let t = AwsTimeouts {
        operation: Duration::from_secs(20),
        ..small_timeouts()
    };
    let clients = worker::aws::clients(&config(format!("http://{addr}"), t)).await;
    let text = times_out(
        "download (HEAD, retried)",
        &["--aws-read-timeout"],
        worker::s3::download(
            &clients.s3,
            "stalled",
            "a/c.nc",
            &dir.path().join("c.nc"),
            1 << 20,
            2,
        ),
    )
    .await;
    assert!(
        text.contains("HTTP read timeout occurred after 1s"),
        "{text}"
    );
}

#[tokio::test]
async fn stalled_body_times_out_download_and_get_small() {
    if !env_credentials() {
        return;
    }
    let addr = stalling_peer().await;
    let clients = worker::aws::clients(&config(format!("http://{addr}"), small_timeouts())).await;
    let s3 = &clients.s3;
    let dir = tempfile::tempdir().unwrap();

    // HEAD answers; the ranged GET's headers and first bytes come, then nothing.
    let text = times_out(
        "download (body)",
        &["--aws-read-timeout"],
        worker::s3::download(
            s3,
            "stalled",
            "x/y.nc",
            &dir.path().join("y.nc"),
            1 << 20,
            2,
        ),
    )
    .await;
    assert!(text.starts_with("s3://stalled/x/y.nc: "), "{text}");
    assert!(text.contains(&format!("bytes 0-{}", SIZE - 1)), "{text}");

    let text = times_out(
        "get_small (body)",
        &["--aws-read-timeout"],
        worker::s3::get_small(s3, "stalled", "x/small.json", 1 << 20),
    )
    .await;
    assert!(text.starts_with("s3://stalled/x/small.json: "), "{text}");
}

#[tokio::test]
async fn trickling_body_hits_the_part_deadline() {
    if !env_credentials() {
        return;
    }
    // A body that keeps arriving, too slowly for its part: the read timeout never fires, the
    // part's deadline (operation timeout + 1 s per 32 KiB) does.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {SIZE}\r\nx-amz-request-id: t\r\n\r\n"
                );
                if sock.write_all(resp.as_bytes()).await.is_err() {
                    return;
                }
                for _ in 0..SIZE {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    if sock.write_all(b"x").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let t = AwsTimeouts {
        connect: Duration::from_secs(1),
        read: Duration::from_secs(2),
        operation: Duration::from_secs(2),
        attempt: None,
    };
    let clients = worker::aws::clients(&config(format!("http://{addr}"), t)).await;
    // get_small's deadline: 2 s + 1 s per 32 KiB of its 64 KiB limit = 4 s.
    let text = times_out(
        "get_small (trickle)",
        &["--aws-operation-timeout"],
        worker::s3::get_small(&clients.s3, "stalled", "t.json", 64 * 1024),
    )
    .await;
    assert!(text.contains("not downloaded within 4 s"), "{text}");
}

#[tokio::test]
async fn clients_carry_the_timeouts() {
    if !env_credentials() {
        return;
    }
    let t = AwsTimeouts {
        connect: Duration::from_secs(2),
        read: Duration::from_secs(30),
        operation: Duration::from_secs(90),
        attempt: Some(Duration::from_secs(45)),
    };
    let clients = worker::aws::clients(&config("http://127.0.0.1:9".into(), t)).await;
    assert_eq!(worker::aws::s3_timeouts(&clients.s3), t);
    let sqs = clients.sqs.config().timeout_config().expect("SQS timeouts");
    assert_eq!(sqs.connect_timeout(), Some(t.connect));
    assert_eq!(sqs.read_timeout(), Some(t.read));
    assert_eq!(sqs.operation_timeout(), Some(t.operation));
    assert_eq!(sqs.operation_attempt_timeout(), t.attempt);
    let stalled = clients
        .s3
        .config()
        .stalled_stream_protection()
        .expect("stalled-stream protection");
    assert!(stalled.is_enabled());
    assert_eq!(stalled.grace_period(), t.read);
}

#[tokio::test]
async fn download_through_moto_with_timeouts() {
    let Some(env) = common::env() else { return };
    tokio::time::timeout(BOUND, async {
        let bucket = common::unique("tmo");
        let mut aws = common::aws_config(&env, &bucket, &bucket);
        aws.timeouts = AwsTimeouts {
            connect: Duration::from_secs(2),
            read: Duration::from_secs(10),
            operation: Duration::from_secs(20),
            attempt: Some(Duration::from_secs(15)),
        };
        let clients = worker::aws::clients(&aws).await;
        let s3 = &clients.s3;
        s3.create_bucket().bucket(&bucket).send().await.unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (scenario, model, year, var) = ("ssp245", "ACCESS-CM2", 2050, "tasmin");
        let key = Dataset::NexGddpCmip6.key(scenario, model, year, var);
        s3.put_object()
            .bucket(&bucket)
            .key(&key)
            .body(data.clone().into())
            .send()
            .await
            .unwrap();

        let found = worker::s3::resolve_key(
            s3,
            &bucket,
            Dataset::NexGddpCmip6,
            scenario,
            model,
            year,
            var,
        )
        .await
        .unwrap();
        assert_eq!(found, key);
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f.nc");
        let n = worker::s3::download(s3, &bucket, &key, &dest, 64 * 1024, 3)
            .await
            .unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(std::fs::read(&dest).unwrap(), data);
        let small = worker::s3::get_small(s3, &bucket, &key, 1 << 20)
            .await
            .unwrap();
        assert_eq!(small, data);
    })
    .await
    .expect("moto download within bound");
}
