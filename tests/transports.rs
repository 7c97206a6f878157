//! Upstream transports other than UDP: TCP, DNS over TLS and DNS over HTTPS,
//! against in-process servers on 127.0.0.1 with a certificate made for the
//! test and trusted through `upstream.ca_file`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, ServerConfig};

fn zone(req: &Message) -> Reply {
    let q = &req.queries[0];
    match q.name().to_string().as_str() {
        "www.example.test." => {
            Reply::Answer(answer(req, vec![a("www.example.test.", 300, "192.0.2.1")]))
        }
        _ => {
            let mut m = response(req, ResponseCode::NXDomain);
            m.authorities.push(soa("example.test.", 3600, 30));
            Reply::Answer(m)
        }
    }
}

/// A certificate for `dns.test`, its PEM (written where sinkd can trust it)
/// and a TLS acceptor offering `alpn`.
fn tls_for_dns_test(dir: &std::path::Path, alpn: &[&[u8]]) -> (TlsAcceptor, std::path::PathBuf) {
    let certified = rcgen::generate_simple_self_signed(vec!["dns.test".to_string()]).unwrap();
    let ca_path = dir.join("test-ca.pem");
    std::fs::write(&ca_path, certified.cert.pem()).unwrap();
    let cert = certified.cert.der().clone();
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der()).unwrap();
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    (TlsAcceptor::from(Arc::new(config)), ca_path)
}

/// A DNS-over-TLS server (RFC 7858) answering from `zone`.
async fn dot_server(acceptor: TlsAcceptor, queries: Arc<AtomicUsize>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, queries) = (acceptor.clone(), queries.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(stream).await {
                    let handler: Handler = Arc::new(zone);
                    serve_stream(tls, handler, queries, Default::default()).await;
                }
            });
        }
    });
    addr
}

/// A DNS-over-HTTPS server (RFC 8484, HTTP/2 POST) answering from `zone`.
async fn doh_server(acceptor: TlsAcceptor, queries: Arc<AtomicUsize>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, queries) = (acceptor.clone(), queries.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut conn) = h2::server::handshake(tls).await else {
                    return;
                };
                while let Some(Ok((request, mut respond))) = conn.accept().await {
                    let queries = queries.clone();
                    tokio::spawn(async move {
                        assert_eq!(request.uri().path(), "/dns-query");
                        let mut body = request.into_body();
                        let mut bytes = Vec::new();
                        while let Some(Ok(chunk)) = body.data().await {
                            let _ = body.flow_control().release_capacity(chunk.len());
                            bytes.extend_from_slice(&chunk);
                        }
                        let Ok(query) = Message::from_vec(&bytes) else {
                            return;
                        };
                        queries.fetch_add(1, Ordering::SeqCst);
                        let Some(reply) = reply_bytes(zone(&query)).await else {
                            return;
                        };
                        let response = http::Response::builder()
                            .status(200)
                            .header("content-type", "application/dns-message")
                            .header("content-length", reply.len())
                            .body(())
                            .unwrap();
                        if let Ok(mut send) = respond.send_response(response, false) {
                            let _ = send.send_data(bytes::Bytes::from(reply), true);
                        }
                    });
                }
            });
        }
    });
    addr
}

fn config(server: &str, ca_file: &std::path::Path) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nservers = [\"{server}\"]\ntimeout_ms = 1500\nca_file = \"{}\"\n",
        ca_file.display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn forwards_over_tcp() {
    let upstream = Upstream::start(zone).await;
    let sinkd = Sinkd::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nservers = [\"tcp://{}\"]\n",
        upstream.addr
    ));
    for _ in 0..3 {
        let r = ask(sinkd.addr, "www.example.test.", RecordType::A).await;
        assert_eq!(rdatas(&r), ["192.0.2.1"]);
        let r = ask(
            sinkd.addr,
            &format!("n{}.example.test.", upstream.count()),
            RecordType::A,
        )
        .await;
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    }
    assert_eq!(
        upstream.count(),
        4,
        "one A (then cached) and three NXDOMAINs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn forwards_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (acceptor, ca) = tls_for_dns_test(dir.path(), &[]);
    let queries = Arc::new(AtomicUsize::new(0));
    let addr = dot_server(acceptor, queries.clone()).await;
    let sinkd = Sinkd::start(&config(&format!("tls://{addr}#dns.test"), &ca));
    let r = ask(sinkd.addr, "www.example.test.", RecordType::A).await;
    assert_eq!(rdatas(&r), ["192.0.2.1"]);
    let r = ask(sinkd.addr, "other.example.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(queries.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn forwards_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let (acceptor, ca) = tls_for_dns_test(dir.path(), &[b"h2"]);
    let queries = Arc::new(AtomicUsize::new(0));
    let addr = doh_server(acceptor, queries.clone()).await;
    let sinkd = Sinkd::start(&config(&format!("https://{addr}/dns-query#dns.test"), &ca));
    let r = ask(sinkd.addr, "www.example.test.", RecordType::A).await;
    assert_eq!(rdatas(&r), ["192.0.2.1"]);
    let r = ask(sinkd.addr, "other.example.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(queries.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_for_another_name_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let (acceptor, ca) = tls_for_dns_test(dir.path(), &[]);
    let queries = Arc::new(AtomicUsize::new(0));
    let addr = dot_server(acceptor, queries.clone()).await;
    let sinkd = Sinkd::start(&config(&format!("tls://{addr}#dns.example"), &ca));
    let r = ask(sinkd.addr, "www.example.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(
        queries.load(Ordering::SeqCst),
        0,
        "no query over an unverified connection"
    );
}
