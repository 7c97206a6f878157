//! Remote lists against an HTTP server on loopback: downloaded at start,
//! looked up through the upstreams (not through blocking), kept on disk for
//! a start without network, and fetched again only when changed.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the list server saw: one line per request, `GET /path if-none-match=…`.
type Seen = Arc<Mutex<Vec<String>>>;

/// A minimal HTTP/1.1 server with one list and an ETag.
async fn list_server(body: &'static str) -> (u16, Seen, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Default::default();
    let log = seen.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let request = String::from_utf8_lossy(&request).to_lowercase();
                let path = request.split(' ').nth(1).unwrap_or("").to_string();
                let if_none_match = request
                    .lines()
                    .find_map(|l| l.strip_prefix("if-none-match: "))
                    .map(str::trim)
                    .unwrap_or("-")
                    .to_string();
                log.lock()
                    .unwrap()
                    .push(format!("GET {path} if-none-match={if_none_match}"));
                let response = if path == "/huge.txt" {
                    // Claims more than sinkd takes; the body never comes.
                    "HTTP/1.1 200 OK\r\ncontent-length: 104857600\r\nconnection: close\r\n\r\nhuge-tracker.test\n".to_string()
                } else if path != "/list.txt" {
                    "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        .to_string()
                } else if if_none_match == "\"v1\"" {
                    "HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\nconnection: close\r\n\r\n"
                        .to_string()
                } else {
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\netag: \"v1\"\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (port, seen, task)
}

/// The upstream knows where the list server lives.
fn zone(req: &Message) -> Reply {
    let q = &req.queries[0];
    let owner = q.name().to_string();
    Reply::Answer(match (owner.as_str(), q.query_type()) {
        ("lists.test.", RecordType::A) => answer(req, vec![a(&owner, 300, "127.0.0.1")]),
        (_, RecordType::A) => answer(req, vec![a(&owner, 300, "192.0.2.1")]),
        _ => {
            let mut m = response(req, ResponseCode::NoError);
            m.authorities.push(soa("test.", 3600, 60));
            m
        }
    })
}

async fn blocked_soon(sinkd: &Sinkd, name: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let r = ask(sinkd.addr, name, RecordType::A).await;
        if rdatas(&r) == ["0.0.0.0"] {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remote_list_is_downloaded_kept_and_fetched_again_only_when_changed() {
    let upstream = Upstream::start(zone).await;
    let (port, seen, server) = list_server("# remote\nremote-tracker.test\n").await;
    let state = tempfile::tempdir().unwrap();
    let config = config_for(
        &[upstream.addr],
        &format!(
            "[blocking]\nlists = [\"local.txt\"]\nremote_dir = \"{}\"\n\
             [[blocking.remote]]\nurl = \"http://lists.test:{port}/list.txt\"\nrefresh = \"1h\"\n",
            state.path().display()
        ),
    );
    // The list server's own name is blocked: its download must not care.
    let files = [("local.txt", "lists.test\n")];

    let sinkd = Sinkd::start_with_files(&config, &files);
    assert!(
        blocked_soon(&sinkd, "remote-tracker.test.", Duration::from_secs(5)).await,
        "the downloaded list is in force"
    );
    assert!(blocked_soon(&sinkd, "lists.test.", Duration::ZERO).await);
    let last = upstream.last.lock().unwrap().clone().unwrap();
    assert_eq!(
        last.queries[0].name().to_string().to_lowercase(),
        "lists.test.",
        "the download's name lookup went to the upstream"
    );
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        ["GET /list.txt if-none-match=-"]
    );
    drop(sinkd);

    // Network down: the copy on disk is used from the start.
    server.abort();
    let sinkd = Sinkd::start_with_files(&config, &files);
    assert!(
        blocked_soon(&sinkd, "remote-tracker.test.", Duration::ZERO).await,
        "the last good copy is loaded before ready"
    );
    drop(sinkd);

    // A server on another port is another URL: no copy yet, so a plain download.
    let (port2, seen2, _server2) = list_server("# remote\nremote-tracker.test\n").await;
    let sinkd = Sinkd::start_with_files(
        &config.replace(&format!(":{port}/"), &format!(":{port2}/")),
        &files,
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen2.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "downloaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen2.lock().unwrap()[0], "GET /list.txt if-none-match=-");
    drop(sinkd);
    // The same URL again: now with the validator.
    let sinkd = Sinkd::start_with_files(
        &config.replace(&format!(":{port}/"), &format!(":{port2}/")),
        &files,
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen2.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "asked again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        seen2.lock().unwrap()[1],
        "GET /list.txt if-none-match=\"v1\""
    );
    assert!(blocked_soon(&sinkd, "remote-tracker.test.", Duration::ZERO).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_list_over_the_size_cap_is_refused() {
    let upstream = Upstream::start(zone).await;
    let (port, seen, _server) = list_server("unused\n").await;
    let state = tempfile::tempdir().unwrap();
    let config = config_for(
        &[upstream.addr],
        &format!(
            "[blocking]\nremote_dir = \"{}\"\n[[blocking.remote]]\nurl = \"http://127.0.0.1:{port}/huge.txt\"\n",
            state.path().display()
        ),
    );
    let sinkd = Sinkd::start(&config);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sinkd.log().contains("cap") {
        assert!(
            Instant::now() < deadline,
            "the refusal is logged: {}",
            sinkd.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert!(!blocked_soon(&sinkd, "huge-tracker.test.", Duration::ZERO).await);
    let stored: Vec<_> = std::fs::read_dir(state.path()).unwrap().flatten().collect();
    assert!(stored.is_empty(), "nothing kept: {stored:?}");
}
