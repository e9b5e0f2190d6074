//! `HttpFetch` against a real loopback HTTP(S) server that misbehaves on purpose
//! (`testkit::metadata`): every file capped while it is read (with and without a
//! `Content-Length`, whatever the length claims), one deadline per file, redirects only on the
//! same origin and at most three, 404 as not found, TLS verified against the registry's CA.

use std::time::{Duration, Instant};

use gateway::catalog::HttpFetch;
use gateway::catalog::http::HttpError;
use gateway::tuf::{Fetch, FetchError};
use testkit::env::random_hex;
use testkit::metadata::{Hook, MetadataServer};
use testkit::upstream::TestCa;

const DEADLINE: Duration = Duration::from_secs(10);

/// A directory holding one file of random bytes; its name and content.
fn one_file(len: usize) -> (tempfile::TempDir, String, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("{}.json", random_hex(6));
    let mut body = vec![0u8; len];
    getrandom::fill(&mut body).unwrap();
    std::fs::write(dir.path().join(&name), &body).unwrap();
    (dir, name, body)
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib << 10
}

#[test]
fn a_file_is_fetched_byte_for_byte() {
    let (dir, name, body) = one_file(5000);
    let server = MetadataServer::start(dir.path());
    let mut fetch = HttpFetch::new(&server.url(), DEADLINE).unwrap();
    assert_eq!(fetch.get(&name, 5000).unwrap(), body);
    assert_eq!(server.requests(&name), 1);
}

#[test]
fn a_file_is_fetched_over_https_from_a_registry_with_its_own_ca() {
    let (dir, name, body) = one_file(300);
    let ca = TestCa::new(&["127.0.0.1"]);
    let (cert, key) = ca.issue(&["127.0.0.1"], false);
    let server = MetadataServer::start_tls(dir.path(), &cert, &key);
    let mut fetch =
        HttpFetch::with_ca(&server.url(), DEADLINE, Some(ca.ca_pem.as_bytes())).unwrap();
    assert_eq!(fetch.get(&name, 300).unwrap(), body);
}

#[test]
fn https_to_a_certificate_no_trusted_ca_vouches_for_is_refused() {
    let (dir, name, _) = one_file(300);
    let ca = TestCa::new(&["127.0.0.1"]);
    let (cert, key) = ca.issue(&["127.0.0.1"], false);
    let server = MetadataServer::start_tls(dir.path(), &cert, &key);
    let mut fetch = HttpFetch::new(&server.url(), DEADLINE).unwrap();
    let err = fetch.get(&name, 300).unwrap_err();
    assert!(matches!(err, HttpError::Tls { .. }), "{err}");
    assert_eq!(server.requests(&name), 0, "no request before TLS verified");
}

#[test]
fn a_missing_file_is_not_found() {
    let (dir, _, _) = one_file(10);
    let server = MetadataServer::start(dir.path());
    let missing = format!("{}.root.json", random_hex(4));
    let mut fetch = HttpFetch::new(&server.url(), DEADLINE).unwrap();
    assert!(matches!(
        fetch.fetch(&missing, 100),
        Err(FetchError::NotFound { file }) if file == missing
    ));
}

#[test]
fn a_file_larger_than_its_cap_is_refused_as_too_large() {
    let (dir, name, _) = one_file(4097);
    let server = MetadataServer::start(dir.path());
    let mut fetch = HttpFetch::new(&server.url(), DEADLINE).unwrap();
    assert!(matches!(
        fetch.fetch(&name, 4096),
        Err(FetchError::TooLarge { max: 4096, .. })
    ));
}

#[test]
fn a_declared_length_over_the_cap_is_refused_before_any_body_arrives() {
    let (dir, name, _) = one_file(10);
    let server = MetadataServer::start(dir.path());
    // A gigabyte announced, nothing sent: waiting for it would hit the deadline instead.
    server.set_hook(
        &name,
        Hook::Lie {
            claimed: 1 << 30,
            actual: 0,
        },
    );
    let mut fetch = HttpFetch::new(&server.url(), DEADLINE).unwrap();
    let started = Instant::now();
    let err = fetch.get(&name, 1 << 20).unwrap_err();
    assert!(
        matches!(err, HttpError::TooLarge { max, .. } if max == 1 << 20),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_body_that_never_ends_is_refused_at_the_cap_with_bounded_memory() {
    let (dir, name, _) = one_file(10);
    let server = MetadataServer::start(dir.path());
    server.set_hook(&name, Hook::Endless);
    let cap: u64 = 8 << 20;
    let mut fetch = HttpFetch::new(&server.url(), DEADLINE).unwrap();
    let (rss_before, started) = (rss_bytes(), Instant::now());
    let err = fetch.get(&name, cap).unwrap_err();
    assert!(
        matches!(err, HttpError::TooLarge { max, .. } if max == cap),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // What was sent is the cap plus what the kernel's socket buffers held when we hung up.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        server.bytes_sent() < cap + (32 << 20),
        "{}",
        server.bytes_sent()
    );
    let grown = rss_bytes().saturating_sub(rss_before);
    assert!(grown < 3 * cap, "resident memory grew by {grown} bytes");
}

#[test]
fn a_length_that_understates_the_body_yields_only_the_declared_bytes() {
    let (dir, name, _) = one_file(10);
    let server = MetadataServer::start(dir.path());
    server.set_hook(
        &name,
        Hook::Lie {
            claimed: 16,
            actual: 4 << 20,
        },
    );
    let mut fetch = HttpFetch::new(&server.url(), DEADLINE).unwrap();
    assert_eq!(fetch.get(&name, 1024).unwrap(), vec![b'x'; 16]);
}

#[test]
fn a_length_that_overstates_the_body_is_a_failed_fetch() {
    let (dir, name, _) = one_file(10);
    let server = MetadataServer::start(dir.path());
    server.set_hook(
        &name,
        Hook::Lie {
            claimed: 1000,
            actual: 10,
        },
    );
    let mut fetch = HttpFetch::new(&server.url(), DEADLINE).unwrap();
    assert!(matches!(
        fetch.fetch(&name, 4096),
        Err(FetchError::Failed { file, .. }) if file == name
    ));
}

#[test]
fn a_trickling_server_is_cut_off_at_the_files_deadline() {
    let (dir, name, _) = one_file(200);
    let server = MetadataServer::start(dir.path());
    server.set_hook(&name, Hook::Trickle(Duration::from_millis(50)));
    let deadline = Duration::from_millis(800);
    let mut fetch = HttpFetch::new(&server.url(), deadline).unwrap();
    let started = Instant::now();
    let err = fetch.get(&name, 4096).unwrap_err();
    assert!(
        matches!(err, HttpError::Deadline { after, .. } if after == deadline),
        "{err}"
    );
    assert!(started.elapsed() < deadline + Duration::from_secs(1));
}

#[test]
fn a_redirect_to_another_origin_is_refused_and_never_followed() {
    let (dir, name, _) = one_file(10);
    let server = MetadataServer::start(dir.path());
    let elsewhere = MetadataServer::start(dir.path());
    server.set_hook(&name, Hook::Redirect(format!("{}{name}", elsewhere.url())));
    let mut fetch = HttpFetch::new(&server.url(), DEADLINE).unwrap();
    let err = fetch.get(&name, 100).unwrap_err();
    assert!(matches!(err, HttpError::CrossOrigin { .. }), "{err}");
    assert_eq!(elsewhere.total_requests(), 0);
}

/// `hops` redirects on the server's own origin, `r1.json` → … → the file on disk.
fn redirect_chain(hops: usize) -> (tempfile::TempDir, MetadataServer, String, Vec<u8>) {
    let (dir, name, body) = one_file(64);
    let server = MetadataServer::start(dir.path());
    let tag = random_hex(4);
    for i in 1..=hops {
        let next = if i == hops {
            format!("/moved/{name}")
        } else {
            format!("/moved/{tag}-r{}.json", i + 1)
        };
        server.set_hook(&format!("{tag}-r{i}.json"), Hook::Redirect(next));
    }
    (dir, server, format!("{tag}-r1.json"), body)
}

#[test]
fn three_redirects_on_the_same_origin_are_followed() {
    let (_dir, server, first, body) = redirect_chain(3);
    let mut fetch = HttpFetch::new(&server.url(), DEADLINE).unwrap();
    assert_eq!(fetch.get(&first, 64).unwrap(), body);
}

#[test]
fn a_fourth_redirect_is_refused() {
    let (_dir, server, first, _) = redirect_chain(4);
    let mut fetch = HttpFetch::new(&server.url(), DEADLINE).unwrap();
    let err = fetch.get(&first, 64).unwrap_err();
    assert!(matches!(err, HttpError::TooManyRedirects { .. }), "{err}");
    assert_eq!(server.total_requests(), 4);
}

#[test]
fn an_error_status_is_reported_with_its_code() {
    let (dir, name, _) = one_file(10);
    let server = MetadataServer::start(dir.path());
    server.set_hook(&name, Hook::Status(503));
    let mut fetch = HttpFetch::new(&server.url(), DEADLINE).unwrap();
    let err = fetch.get(&name, 100).unwrap_err();
    assert!(
        matches!(err, HttpError::Status { status: 503, .. }),
        "{err}"
    );
}
