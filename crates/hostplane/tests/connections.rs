//! Connections that send nothing, or stop part way, are closed in every phase, and the
//! caps on open connections keep the server answering others (the real binary).

#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::{http, listening_port, sqlite_db, Db, Server};

/// The HTTP/2 client preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty HTTP/2 SETTINGS frame.
const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// Reads until the server closes the connection; how long that took. Fails if the
/// server keeps it open for 30 s.
fn closed_after(mut s: TcpStream, what: &str) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return start.elapsed(),
            Err(e) => panic!("{what}: still open after {:?} ({e})", start.elapsed()),
        }
    }
}

/// Every phase of a connection with nothing in flight ends: nothing sent, part of the
/// HTTP/2 preface, the preface without its SETTINGS, a finished HTTP/2 handshake, an
/// HTTP/1 or HTTP/2 connection kept open after its request. A slow request is not cut.
#[test]
fn silent_connections_are_closed_in_every_phase() {
    let db = sqlite_db();
    let server = Server::start_with(
        &db,
        &["--header-timeout-secs", "2", "--idle-timeout-secs", "4"],
        "conn-key",
    );
    let port = server.port;
    let cases: [(&str, &[u8]); 4] = [
        ("nothing sent", b""),
        ("part of the HTTP/2 preface", &PREFACE[..10]),
        ("the HTTP/2 preface without SETTINGS", PREFACE),
        ("a finished HTTP/2 handshake", &[PREFACE, SETTINGS].concat()),
    ];
    for (what, bytes) in cases {
        let mut s = connect(port);
        s.write_all(bytes).unwrap();
        let took = closed_after(s, what);
        // The header deadline (2 s), give or take scheduling on two busy cores.
        assert!(
            took >= Duration::from_millis(1500) && took < Duration::from_secs(12),
            "{what}: closed after {took:?}, expected about 2 s"
        );
    }
    // HTTP/1 keep-alive: the response comes whole, then the next request's headers have
    // the header deadline (hyper starts it while the connection waits).
    let mut s = connect(port);
    s.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let took = closed_after(s, "an idle keep-alive connection");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(12),
        "keep-alive: closed after {took:?}, expected about 2 s"
    );
    // HTTP/2 after a request (GET /, in HPACK's static table, ends the stream): the
    // idle bound (4 s), not the header deadline.
    let mut s = connect(port);
    let headers = [0, 0, 3, 1, 5, 0, 0, 0, 1, 0x82, 0x86, 0x84];
    s.write_all(&[PREFACE, SETTINGS, &headers].concat())
        .unwrap();
    let took = closed_after(s, "an idle HTTP/2 connection");
    assert!(
        took >= Duration::from_millis(3500) && took < Duration::from_secs(14),
        "HTTP/2: closed after {took:?}, expected about 4 s"
    );
    // A long-poll-like request is not idle: an upload that takes longer than the idle
    // bound still gets its answer (here: a body sent slowly over 6 s).
    let mut s = connect(port);
    let body = b"{\"compute_type\":\"k8s\",\"compute_id\":\"slow\",\"compute_config\":{}}";
    write!(
        s,
        "POST /v2/listeners HTTP/1.1\r\nHost: x\r\nX-Api-Key: conn-key\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    for chunk in body.chunks(body.len() / 3 + 1) {
        std::thread::sleep(Duration::from_secs(2));
        s.write_all(chunk).unwrap();
    }
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 201 Created\r\n"), "{answer}");
}

/// One address may hold `--max-connections-per-address` connections; the next is
/// closed at once, and others are not affected.
#[test]
fn connections_per_address_are_capped() {
    let db = sqlite_db();
    let server = Server::start_with(
        &db,
        &[
            "--header-timeout-secs",
            "20",
            "--max-connections-per-address",
            "3",
        ],
        "conn-key",
    );
    let held: Vec<_> = (0..3).map(|_| connect(server.port)).collect();
    // The accept loop has taken them once a fourth is refused; wait for that.
    let took = closed_after(connect(server.port), "a fourth connection");
    assert!(took < Duration::from_secs(5), "refused after {took:?}");
    drop(held);
    // Freed slots serve again (the server counts the closes as they happen).
    support::wait_until("a freed slot to serve", 10, || {
        support::try_http(server.port, "GET", "/ok", &[], "").is_ok_and(|(status, _)| status == 200)
    });
}

/// The audit's case: with a low open-file limit, silent sockets once left the server
/// unable to accept anyone (`accept failed: Too many open files` every 50 ms). The cap
/// on connections is fitted to the limit, so a real client waits in the backlog until
/// the silent ones time out, and is then served; accept never fails.
#[test]
fn a_low_file_limit_and_silent_sockets_do_not_stop_the_server() {
    let db: Db = sqlite_db();
    let log = db.dir.0.join("prlimit.log");
    let serve = support::serve_command(&db);
    let mut child = std::process::Command::new("prlimit")
        .arg("--nofile=160:160")
        .arg(serve.get_program())
        .args(serve.get_args())
        .args(["--header-timeout-secs", "3"])
        .args(["--max-connections-per-address", "1000"])
        .env("HOSTPLANE_BOOTSTRAP_API_KEY", "conn-key")
        .env("HOSTPLANE_SECRET_KEY", support::SECRET_KEY)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let port = listening_port(&mut child, &log, "hostplane listening");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("open_file_limit=160 max_connections=32"),
        "no warning about the fitted cap:\n{text}"
    );
    // Twice the cap of silent sockets (the second half waits in the backlog).
    let silent: Vec<_> = (0..64).map(|_| connect(port)).collect();
    let start = Instant::now();
    let (status, body) = http(port, "GET", "/ok", &[], "");
    assert_eq!((status, body.as_str()), (200, r#"{"ok":true}"#));
    // At most two rounds of silent sockets time out first (3 s each).
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "served after {:?}",
        start.elapsed()
    );
    drop(silent);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("accept failed"), "{text}");
}
