//! `--s3-no-sign-request`: unsigned S3, signed SQS, S3 in its own region.
//!
//! moto treats an unsigned request as anonymous: it may list any bucket, but reads only objects
//! with a `public-read` ACL (anything else is a 403), so the fixture objects are made public as
//! on the real open-data buckets, and reading a private one unsigned must fail. The clients talk
//! to moto through a loopback proxy that records every request's headers: S3 requests must reach
//! it without `Authorization` (or any other SigV4 trace) while SQS requests carry a SigV4
//! `Authorization`, and a job must still load its rows. The last test runs the real binary with
//! no AWS credentials anywhere (environment cleared, empty home, instance metadata off): it
//! reads an S3 object with the flag, and without it fails before sending anything.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{World, env};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    /// Header names lower-cased.
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// SQS (JSON protocol: `x-amz-target: AmazonSQS.*`) rather than S3.
    fn is_sqs(&self) -> bool {
        self.header("x-amz-target")
            .is_some_and(|t| t.starts_with("AmazonSQS."))
    }

    /// Whether any part of a SigV4 signature is on the request.
    fn signed(&self) -> bool {
        self.header("authorization").is_some()
            || self.header("x-amz-security-token").is_some()
            || self.header("x-amz-date").is_some()
            || self.path.contains("X-Amz-Signature")
            || self.path.contains("X-Amz-Credential")
    }

    /// The region of the SigV4 credential scope (`Credential=AKID/DATE/REGION/SERVICE/…`).
    fn signing_scope(&self) -> Option<(String, String)> {
        let auth = self.header("authorization")?;
        let cred = auth.split("Credential=").nth(1)?.split(',').next()?;
        let parts: Vec<&str> = cred.split('/').collect();
        Some((parts.get(2)?.to_string(), parts.get(3)?.to_string()))
    }
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// A loopback HTTP/1.1 proxy in front of `upstream` that records each request. One request
/// per connection (`Connection: close` both ways), bodies by `Content-Length`.
async fn recording_proxy(upstream: SocketAddr) -> (SocketAddr, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log: Log = Arc::default();
    let l = Arc::clone(&log);
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(forward(sock, upstream, Arc::clone(&l)));
        }
    });
    (addr, log)
}

async fn forward(mut client: TcpStream, upstream: SocketAddr, log: Log) {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 8192];
        match client.read(&mut chunk).await {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let path = request_line.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    assert!(
        !headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked")),
        "the proxy forwards Content-Length bodies only"
    );
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let mut chunk = [0u8; 8192];
        match client.read(&mut chunk).await {
            Ok(n) if n > 0 => body.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    }
    log.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        headers: headers.clone(),
    });
    let mut out = format!("{method} {path} HTTP/1.1\r\n");
    for (n, v) in headers.iter().filter(|(n, _)| n != "connection") {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str("connection: close\r\n\r\n");
    let Ok(mut up) = TcpStream::connect(upstream).await else {
        return;
    };
    let mut req = out.into_bytes();
    req.extend_from_slice(&body);
    if up.write_all(&req).await.is_err() {
        return;
    }
    let mut resp = Vec::new();
    if up.read_to_end(&mut resp).await.is_err() {
        return;
    }
    // Make the client open a new connection for its next request.
    let resp = match resp.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => {
            let head = String::from_utf8_lossy(&resp[..i]);
            let mut h: String = head
                .split("\r\n")
                .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
                .map(|l| format!("{l}\r\n"))
                .collect();
            h.push_str("Connection: close\r\n\r\n");
            let mut v = h.into_bytes();
            v.extend_from_slice(&resp[i + 4..]);
            v
        }
        None => resp,
    };
    let _ = client.write_all(&resp).await;
    let _ = client.shutdown().await;
}

/// Gives every object under `prefix` of the world's data bucket a `public-read` ACL.
async fn make_public(w: &World, prefix: &str) {
    let keys = worker::s3::list_keys(&w.s3, &w.bucket, prefix)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    for k in keys {
        w.s3.put_object_acl()
            .bucket(&w.bucket)
            .key(k)
            .acl(aws_sdk_s3::types::ObjectCannedAcl::PublicRead)
            .send()
            .await
            .unwrap();
    }
}

fn moto_addr(endpoint: &str) -> SocketAddr {
    endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("moto endpoint is http://IP:PORT")
}

fn s3_requests(log: &Log) -> Vec<Seen> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|s| !s.is_sqs())
        .cloned()
        .collect()
}

fn sqs_requests(log: &Log) -> Vec<Seen> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|s| s.is_sqs())
        .cloned()
        .collect()
}

/// The flag's effect on the client itself: the same listing through the proxy is signed (for
/// the S3 region, not the queue's) without it and unsigned with it.
#[tokio::test]
async fn s3_client_signs_only_without_the_flag() {
    let Some(env) = env() else { return };
    let w = World::new(env, "unsig-client", 3, 30).await;
    w.upload_job("NEX-GDDP-CMIP6", "CanESM5", 2016, None).await;
    let (proxy, log) = recording_proxy(moto_addr(&w.env.endpoint)).await;
    let mut aws = w.aws();
    aws.endpoint_url = Some(format!("http://{proxy}"));
    aws.s3.region = "eu-north-1".into();
    let prefix = "NEX-GDDP-CMIP6/CanESM5/ssp245/";

    let signed = worker::aws::clients(&aws).await;
    let keys = worker::s3::list_keys(&signed.s3, &w.bucket, prefix)
        .await
        .unwrap();
    assert_eq!(keys.len(), 3, "{keys:?}");
    let seen = s3_requests(&log);
    assert!(!seen.is_empty());
    for s in &seen {
        assert!(s.signed(), "signed client sent {s:?}");
        assert_eq!(
            s.signing_scope(),
            Some(("eu-north-1".into(), "s3".into())),
            "S3 is signed for --s3-region: {s:?}"
        );
    }
    // SQS keeps the standard chain's region.
    worker::queue::queue_attribute(
        &signed.sqs,
        &w.queue_url,
        aws_sdk_sqs::types::QueueAttributeName::QueueArn,
    )
    .await
    .unwrap();
    let sqs = sqs_requests(&log);
    assert!(!sqs.is_empty());
    let queue_region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into());
    for s in &sqs {
        assert_eq!(
            s.signing_scope(),
            Some((queue_region.clone(), "sqs".into()))
        );
    }

    log.lock().unwrap().clear();
    aws.s3.no_sign_request = true;
    let unsigned = worker::aws::clients(&aws).await;
    let keys2 = worker::s3::list_keys(&unsigned.s3, &w.bucket, prefix)
        .await
        .unwrap();
    assert_eq!(keys2, keys);
    let dir = tempfile::tempdir().unwrap();
    // Private objects are not readable anonymously: a permanent error that says why.
    let e = worker::s3::download(
        &unsigned.s3,
        &w.bucket,
        &keys[0],
        &dir.path().join("private.nc"),
        16 * 1024,
        2,
    )
    .await
    .expect_err("a private object read unsigned");
    assert!(!e.is_transient(), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("access denied (HTTP 403)") && text.contains("--s3-no-sign-request"),
        "{text}"
    );
    make_public(&w, prefix).await;
    let n = worker::s3::download(
        &unsigned.s3,
        &w.bucket,
        &keys[0],
        &dir.path().join("f.nc"),
        16 * 1024,
        2,
    )
    .await
    .unwrap();
    assert!(n > 16 * 1024, "several ranged GETs: {n} bytes");
    let seen = s3_requests(&log);
    assert!(seen.iter().any(|s| s.method == "HEAD"), "{seen:?}");
    assert!(
        seen.iter().filter(|s| s.method == "GET").count() >= 3,
        "{seen:?}"
    );
    for s in &seen {
        assert!(!s.signed(), "unsigned client sent a signature: {s:?}");
    }
    // SQS of the same clients still signs.
    worker::queue::queue_attribute(
        &unsigned.sqs,
        &w.queue_url,
        aws_sdk_sqs::types::QueueAttributeName::QueueArn,
    )
    .await
    .unwrap();
    let sqs = sqs_requests(&log);
    assert!(!sqs.is_empty());
    assert!(sqs.iter().all(|s| s.signed()), "{sqs:?}");
    w.cleanup().await;
}

/// `nexingest run` with `NEXINGEST_S3_NO_SIGN_REQUEST=true`: the job loads, every S3 request
/// (listing, HEAD, ranged GETs) is unsigned and every SQS request signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_reads_s3_unsigned_and_signs_sqs() {
    let Some(env) = env() else { return };
    let w = World::new(env, "unsig-run", 3, 30).await;
    w.upload_job("NEX-GDDP-CMIP6", "CanESM5", 2016, None).await;
    make_public(&w, "NEX-GDDP-CMIP6/").await;
    w.enqueue_job(("NEX-GDDP-CMIP6", "ssp245", "CanESM5", 2016), &[])
        .await;
    let (proxy, log) = recording_proxy(moto_addr(&w.env.endpoint)).await;
    let out = common::nexingest()
        .args(["--schema", &w.schema, "run", "--until-empty"])
        .args(["--queue-url", &w.queue_url, "--wait-time", "1"])
        .args(["--aws-endpoint-url", &format!("http://{proxy}")])
        .args(["--cmip6-bucket", &w.bucket])
        .args(["--download-part-mb", "1"])
        .env("NEXINGEST_DATABASE_URL", &w.env.db_url)
        .env("NEXINGEST_S3_NO_SIGN_REQUEST", "true")
        .env_remove("NEXINGEST_AWS_ENDPOINT_URL")
        .env_remove("AWS_ENDPOINT_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .expect("run finishes")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let done = w
        .count("SELECT count(*) FROM data_source WHERE state = 'done'")
        .await;
    assert_eq!(done, 1, "{stderr}");
    assert!(w.count("SELECT count(*) FROM climate_data_year").await > 0);

    let s3 = s3_requests(&log);
    for m in ["GET", "HEAD"] {
        assert!(s3.iter().any(|s| s.method == m), "no S3 {m}: {s3:?}");
    }
    assert!(
        s3.iter().any(|s| s.path.contains("list-type=2")),
        "CMIP6 keys are listed: {s3:?}"
    );
    for s in &s3 {
        assert!(!s.signed(), "S3 request signed: {s:?}");
    }
    let sqs = sqs_requests(&log);
    assert!(
        sqs.iter()
            .any(|s| s.header("x-amz-target") == Some("AmazonSQS.ReceiveMessage")),
        "{sqs:?}"
    );
    assert!(
        sqs.iter()
            .any(|s| s.header("x-amz-target") == Some("AmazonSQS.DeleteMessage")),
        "{sqs:?}"
    );
    for s in &sqs {
        let auth = s.header("authorization").unwrap_or_default();
        assert!(auth.starts_with("AWS4-HMAC-SHA256 "), "SQS unsigned: {s:?}");
    }
    w.cleanup().await;
}

/// The real binary with no credentials anywhere reads an object with the flag (here a GeoJSON
/// through `import-locations`), and without it fails before sending any S3 request.
#[tokio::test]
async fn no_credentials_at_all_read_with_the_flag_only() {
    let Some(env) = env() else { return };
    let w = World::new(env, "unsig-nocreds", 3, 30).await;
    let geojson = r#"{"type":"FeatureCollection","features":[
        {"type":"Feature","properties":{"name":"Fresno","id":"f"},
         "geometry":{"type":"Point","coordinates":[-119.79,36.74]}}]}"#;
    w.s3.put_object()
        .bucket(&w.geo_bucket)
        .key("cities.geojson")
        .body(geojson.as_bytes().to_vec().into())
        .acl(aws_sdk_s3::types::ObjectCannedAcl::PublicRead)
        .send()
        .await
        .unwrap();
    let (proxy, log) = recording_proxy(moto_addr(&w.env.endpoint)).await;
    let home = tempfile::tempdir().unwrap();
    let url = format!("s3://{}/cities.geojson", w.geo_bucket);
    let import = |extra: &'static [&'static str]| {
        common::nexingest()
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", home.path().join("config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                home.path().join("credentials"),
            )
            .env("NEXINGEST_DATABASE_URL", &w.env.db_url)
            .args(["--schema", &w.schema, "import-locations", &url])
            .args(["--aws-endpoint-url", &format!("http://{proxy}")])
            .args(["--allowed-buckets", &w.geo_bucket])
            .args(["--aws-operation-timeout", "20"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output()
    };

    let out = tokio::time::timeout(Duration::from_secs(60), import(&[]))
        .await
        .expect("import without the flag finishes")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "signed read without credentials");
    assert!(stderr.to_lowercase().contains("credential"), "{stderr}");
    assert!(
        s3_requests(&log).is_empty(),
        "nothing sent unsigned by accident"
    );
    assert_eq!(w.count("SELECT count(*) FROM location").await, 0);

    let out = tokio::time::timeout(Duration::from_secs(60), import(&["--s3-no-sign-request"]))
        .await
        .expect("import with the flag finishes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("imported 1 locations"), "{stdout}");
    assert_eq!(w.count("SELECT count(*) FROM location").await, 1);
    let seen = s3_requests(&log);
    assert!(seen.iter().any(|s| s.method == "GET"), "{seen:?}");
    assert!(seen.iter().all(|s| !s.signed()), "{seen:?}");
    w.cleanup().await;
}
