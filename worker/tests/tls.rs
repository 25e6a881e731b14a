//! TLS to PostgreSQL against the local cluster of `scripts/services.sh`: `ssl = on` with a
//! throwaway CA, a server certificate that names `localhost` only, and the role `nexingest_tls`
//! that `pg_hba.conf` admits only over TLS (`hostssl`, scram password), as RDS with
//! `rds.force_ssl = 1` does.

mod common;

use clap::Parser;
use worker::cli::Cli;
use worker::config::DbConfig;
use worker::db;

/// `SELECT ssl FROM pg_stat_ssl` for this session, or the connection error's text.
async fn ssl_in_use(url: &str) -> Result<bool, String> {
    let client = db::connect(url).await.map_err(|e| e.to_string())?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

/// The connection error's text; panics if the connection succeeds.
async fn refused(url: &str) -> String {
    match db::connect(url).await {
        Ok(_) => panic!("connected with {}", worker::config::redact_url(url)),
        Err(e) => {
            assert!(!e.is_transient(), "a setting to fix is not transient: {e}");
            eprintln!("refused as expected: {e}");
            e.to_string()
        }
    }
}

fn password(url: &str) -> String {
    let cfg: tokio_postgres::Config = url.parse().expect("test URL");
    String::from_utf8(cfg.get_password().expect("password").to_vec()).unwrap()
}

/// The URL with more query parameters.
fn with(url: &str, query: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
}

fn assert_no_password(text: &str, pw: &str) {
    assert!(!text.contains(pw), "password in: {text}");
}

#[tokio::test]
async fn verify_full_with_the_ca_connects_over_tls() {
    let Some(t) = common::tls_env() else { return };
    let ca = t.ca.display();
    // Through the URL.
    let url = with(&t.tls_url, &format!("sslmode=verify-full&sslrootcert={ca}"));
    assert_eq!(ssl_in_use(&url).await, Ok(true));

    // Through the worker's flags and pool: --db-sslrootcert becomes the URL's sslrootcert.
    let cli = Cli::try_parse_from([
        "nexingest",
        "--database-url",
        &with(&t.tls_url, "sslmode=verify-full"),
        "--db-sslrootcert",
        &ca.to_string(),
        "status",
    ])
    .unwrap();
    let cfg = DbConfig::from_args(&cli.global).unwrap();
    assert_no_password(&format!("{cfg:?}"), &password(&t.tls_url));
    let pool = db::pool(&cfg, 1).unwrap();
    let client = pool.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    let version: String = row.get(1);
    assert!(version.starts_with("TLSv1."), "{version}");

    // The default (prefer) takes TLS when the server offers it; disable does not.
    assert_eq!(ssl_in_use(&t.db_url).await, Ok(true));
    assert_eq!(
        ssl_in_use(&with(&t.db_url, "sslmode=disable")).await,
        Ok(false)
    );
}

#[tokio::test]
async fn a_wrong_ca_is_refused_with_what_to_fix() {
    let Some(t) = common::tls_env() else { return };
    let pw = password(&t.tls_url);
    for mode in ["verify-full", "verify-ca", "require", "prefer"] {
        // require/prefer with an sslrootcert check the chain, as libpq does.
        let url = with(
            &t.tls_url,
            &format!("sslmode={mode}&sslrootcert={}", t.other_ca.display()),
        );
        let e = refused(&url).await;
        assert!(e.contains("certificate not trusted"), "{mode}: {e}");
        assert!(
            e.contains("set sslrootcert / --db-sslrootcert to the server's CA bundle"),
            "{mode}: {e}"
        );
        assert!(e.contains("global-bundle.pem"), "{mode}: {e}");
        assert!(e.contains("other-ca.crt"), "names the file it used: {e}");
        assert_no_password(&e, &pw);
    }
    // Without sslrootcert, verify-full uses the system's CAs, which do not know this one.
    let e = refused(&with(&t.tls_url, "sslmode=verify-full")).await;
    assert!(e.contains("certificate not trusted"), "{e}");
    assert!(e.contains("system's CA certificates"), "{e}");
    assert_no_password(&e, &pw);

    // A bad --db-sslrootcert is a configuration error, before any connection.
    let cli = Cli::try_parse_from([
        "nexingest",
        "--database-url",
        &with(&t.tls_url, "sslmode=verify-full"),
        "--db-sslrootcert",
        "/nonexistent/global-bundle.pem",
        "status",
    ])
    .unwrap();
    let e = DbConfig::from_args(&cli.global).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/global-bundle.pem"), "{e}");
    assert_no_password(&e, &pw);
}

#[tokio::test]
async fn a_host_name_the_certificate_does_not_name_is_refused_under_verify_full_only() {
    let Some(t) = common::tls_env() else { return };
    let pw = password(&t.tls_url);
    // The server certificate names `localhost` only.
    let by_ip = t.tls_url.replace("@localhost:", "@127.0.0.1:");
    assert_ne!(by_ip, t.tls_url, "TLS URL must use localhost");
    let ca = t.ca.display();
    let e = refused(&with(
        &by_ip,
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await;
    assert!(
        e.contains("certificate not valid for host \"127.0.0.1\""),
        "{e}"
    );
    assert!(e.contains("localhost"), "names the certificate's host: {e}");
    assert!(e.contains("sslmode=verify-ca"), "{e}");
    assert_no_password(&e, &pw);
    // verify-ca checks the chain, not the name.
    let url = with(&by_ip, &format!("sslmode=verify-ca&sslrootcert={ca}"));
    assert_eq!(ssl_in_use(&url).await, Ok(true));
}

#[tokio::test]
async fn a_role_admitted_only_over_tls_needs_sslmode_require() {
    let Some(t) = common::tls_env() else { return };
    let pw = password(&t.tls_url);
    let e = refused(&with(&t.tls_url, "sslmode=disable")).await;
    assert!(e.contains("no encryption"), "the server's refusal: {e}");
    assert!(e.contains("set sslmode=require"), "{e}");
    assert_no_password(&e, &pw);

    assert_eq!(
        ssl_in_use(&with(&t.tls_url, "sslmode=require")).await,
        Ok(true)
    );
    assert_eq!(ssl_in_use(&t.tls_url).await, Ok(true), "prefer");

    // A wrong password: refused, and the error does not echo it.
    let wrong = t.tls_url.replace(&format!(":{pw}@"), ":not-the-password@");
    let e = match db::connect(&with(&wrong, "sslmode=require")).await {
        Ok(_) => panic!("connected with a wrong password"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("password authentication failed"), "{e}");
    assert_no_password(&e, "not-the-password");
}
