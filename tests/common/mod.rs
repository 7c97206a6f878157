//! Test support: sinkd started as a user starts it (its binary, a config file
//! in a temp dir, port 0), in-process upstream DNS servers, and a small DNS
//! client. Everything stays on 127.0.0.0/8.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// What an in-process upstream does with one query.
pub enum Reply {
    Answer(Message),
    AnswerAfter(Duration, Message),
    /// Say nothing: a dead or overloaded server.
    Silence,
}

pub type Handler = Arc<dyn Fn(&Message) -> Reply + Send + Sync>;

/// An authoritative-looking DNS server on 127.0.0.1, UDP and TCP on one port.
pub struct Upstream {
    pub addr: SocketAddr,
    pub queries: Arc<AtomicUsize>,
    /// The last query received, to check what sinkd sent on.
    pub last: Arc<std::sync::Mutex<Option<Message>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Upstream {
    pub async fn start(handler: impl Fn(&Message) -> Reply + Send + Sync + 'static) -> Upstream {
        let handler: Handler = Arc::new(handler);
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let port = udp.local_addr().unwrap().port();
            if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)).await {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().unwrap();
        let queries = Arc::new(AtomicUsize::new(0));
        let last = Arc::new(std::sync::Mutex::new(None));
        let udp = Arc::new(udp);
        let mut tasks = Vec::new();
        {
            let (handler, queries, last) = (handler.clone(), queries.clone(), last.clone());
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 65535];
                loop {
                    let Ok((len, src)) = udp.recv_from(&mut buf).await else {
                        continue;
                    };
                    let Ok(request) = Message::from_vec(&buf[..len]) else {
                        continue;
                    };
                    queries.fetch_add(1, Ordering::SeqCst);
                    *last.lock().unwrap() = Some(request.clone());
                    let reply = handler(&request);
                    let udp = udp.clone();
                    tokio::spawn(async move {
                        if let Some(mut bytes) = reply_bytes(reply).await {
                            let limit = request.max_payload().max(512) as usize;
                            if bytes.len() > limit {
                                bytes = truncated(&request);
                            }
                            let _ = udp.send_to(&bytes, src).await;
                        }
                    });
                }
            }));
        }
        {
            let (handler, queries, last) = (handler.clone(), queries.clone(), last.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = tcp.accept().await else {
                        continue;
                    };
                    let (handler, queries, last) = (handler.clone(), queries.clone(), last.clone());
                    tokio::spawn(serve_stream(stream, handler, queries, last));
                }
            }));
        }
        Upstream {
            addr,
            queries,
            last,
            tasks,
        }
    }

    pub fn count(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }

    /// Stops answering and closes its sockets: it is dead from now on.
    pub fn kill(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Answers length-prefixed DNS messages on one stream (TCP or TLS), each as
/// soon as its handler's reply is ready.
pub async fn serve_stream<S>(
    stream: S,
    handler: Handler,
    queries: Arc<AtomicUsize>,
    last: Arc<std::sync::Mutex<Option<Message>>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut rd, wr) = tokio::io::split(stream);
    let wr = Arc::new(tokio::sync::Mutex::new(wr));
    while let Ok(len) = rd.read_u16().await {
        let mut buf = vec![0u8; len as usize];
        if rd.read_exact(&mut buf).await.is_err() {
            break;
        }
        let Ok(request) = Message::from_vec(&buf) else {
            break;
        };
        queries.fetch_add(1, Ordering::SeqCst);
        *last.lock().unwrap() = Some(request.clone());
        let reply = handler(&request);
        let wr = wr.clone();
        tokio::spawn(async move {
            if let Some(bytes) = reply_bytes(reply).await {
                let mut wr = wr.lock().await;
                let _ = wr.write_all(&(bytes.len() as u16).to_be_bytes()).await;
                let _ = wr.write_all(&bytes).await;
            }
        });
    }
}

pub async fn reply_bytes(reply: Reply) -> Option<Vec<u8>> {
    match reply {
        Reply::Answer(m) => Some(m.to_vec().unwrap()),
        Reply::AnswerAfter(delay, m) => {
            tokio::time::sleep(delay).await;
            Some(m.to_vec().unwrap())
        }
        Reply::Silence => None,
    }
}

fn truncated(request: &Message) -> Vec<u8> {
    let mut m = response(request, ResponseCode::NoError);
    m.metadata.truncation = true;
    m.to_vec().unwrap()
}

/// An empty response to `request` with `rcode`, echoing ID, question and EDNS
/// as a real server does.
pub fn response(request: &Message, rcode: ResponseCode) -> Message {
    let mut m = Message::new(request.metadata.id, MessageType::Response, OpCode::Query);
    m.metadata.recursion_desired = request.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.metadata.response_code = rcode;
    m.queries = request.queries.clone();
    if let Some(edns) = &request.edns {
        let mut ours = Edns::new();
        ours.set_max_payload(1232)
            .set_dnssec_ok(edns.flags().dnssec_ok);
        m.edns = Some(ours);
    }
    m
}

/// A response carrying `answers`.
pub fn answer(request: &Message, answers: Vec<Record>) -> Message {
    let mut m = response(request, ResponseCode::NoError);
    m.answers = answers;
    m
}

/// A name spelled exactly as given (case kept).
pub fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

pub fn soa(zone: &str, ttl: u32, minimum: u32) -> Record {
    Record::from_rdata(
        name(zone),
        ttl,
        RData::SOA(SOA::new(
            name(&format!("ns.{zone}")),
            name(&format!("hostmaster.{zone}")),
            2026112301,
            3600,
            600,
            86400,
            minimum,
        )),
    )
}

pub fn a(owner: &str, ttl: u32, ip: &str) -> Record {
    Record::from_rdata(name(owner), ttl, RData::A(A(ip.parse().unwrap())))
}

pub fn aaaa(owner: &str, ttl: u32, ip: &str) -> Record {
    Record::from_rdata(name(owner), ttl, RData::AAAA(AAAA(ip.parse().unwrap())))
}

pub fn cname(owner: &str, ttl: u32, target: &str) -> Record {
    Record::from_rdata(name(owner), ttl, RData::CNAME(CNAME(name(target))))
}

pub fn mx(owner: &str, ttl: u32, pref: u16, exchange: &str) -> Record {
    Record::from_rdata(name(owner), ttl, RData::MX(MX::new(pref, name(exchange))))
}

pub fn txt(owner: &str, ttl: u32, text: &str) -> Record {
    Record::from_rdata(
        name(owner),
        ttl,
        RData::TXT(TXT::new(vec![text.to_string()])),
    )
}

/// A running sinkd process, killed when dropped.
pub struct Sinkd {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    child: Child,
}

impl Sinkd {
    /// Writes `config` (TOML) to a temp dir and runs `sinkd serve -c` on it.
    /// The config must listen on 127.0.0.1:0.
    pub fn start(config: &str) -> Sinkd {
        Sinkd::start_with_files(config, &[])
    }

    /// Like [`Sinkd::start`], with extra files (lists) written beside the config
    /// first; their paths are relative to the temp dir.
    pub fn start_with_files(config: &str, files: &[(&str, &str)]) -> Sinkd {
        Sinkd::start_with_env(config, files, &[])
    }

    /// Like [`Sinkd::start_with_files`], with extra environment variables.
    pub fn start_with_env(config: &str, files: &[(&str, &str)], env: &[(&str, &str)]) -> Sinkd {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config).unwrap();
        // The log goes beside the config, for tests that read it (`Sinkd::log`).
        let log = std::fs::File::create(dir.path().join("sinkd.log")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_sinkd"))
            .args(["serve", "-c"])
            .arg(&config_path)
            .env("RUST_LOG", "sinkd=debug")
            .env("NO_COLOR", "1")
            .envs(
                env.iter()
                    .map(|(k, v)| (k, v.replace("{dir}", &dir.path().display().to_string()))),
            )
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut addr = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("sinkd: listening on ") {
                addr = Some(rest.split(' ').next().unwrap().parse().unwrap());
            }
            if line == "sinkd: ready" {
                break;
            }
        }
        // Keep draining stdout so sinkd never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        if addr.is_none() {
            let log = std::fs::read_to_string(dir.path().join("sinkd.log")).unwrap_or_default();
            panic!("sinkd did not start:\n{log}");
        }
        Sinkd {
            addr: addr.unwrap(),
            dir,
            config_path,
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A config listening on 127.0.0.1:0 with the given upstreams and extra TOML.
    pub fn with_upstreams(upstreams: &[SocketAddr], extra: &str) -> Sinkd {
        Sinkd::start(&config_for(upstreams, extra))
    }

    /// A path inside sinkd's config directory.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// The query log's lines so far, parsed.
    pub fn querylog(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path("querylog.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    /// The query log's lines once there are at least `count` (a line is
    /// written after its answer is sent, and the writer gathers for 50 ms),
    /// or whatever is there after 3 s.
    pub async fn querylog_of(&self, count: usize) -> Vec<serde_json::Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        loop {
            let lines = self.querylog();
            if lines.len() >= count || std::time::Instant::now() > deadline {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What sinkd logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("sinkd.log")).unwrap_or_default()
    }

    /// Sends SIGTERM, as `systemctl stop` does, and waits for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }

    /// Sends SIGHUP, as `systemctl reload` does.
    pub fn hangup(&self) {
        Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
    }
}

/// Config text listening on 127.0.0.1:0 with the given upstreams and extra TOML.
pub fn config_for(upstreams: &[SocketAddr], extra: &str) -> String {
    let servers: Vec<String> = upstreams.iter().map(|a| format!("\"udp://{a}\"")).collect();
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nallow = [\"127.0.0.0/8\"]\n\n\
         [upstream]\nservers = [{}]\ntimeout_ms = 1000\n{extra}\n",
        servers.join(", ")
    )
}

impl Sinkd {}

impl Drop for Sinkd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds a query message.
pub fn query(qname: &str, qtype: RecordType, edns: Option<(u16, bool)>) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.queries.push(Query::query(name(qname), qtype));
    if let Some((size, dnssec_ok)) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size).set_dnssec_ok(dnssec_ok);
        m.edns = Some(e);
    }
    m
}

/// Sends raw bytes over UDP from `from` and waits for one datagram back.
pub async fn exchange_udp_raw(
    server: SocketAddr,
    from: IpAddr,
    bytes: &[u8],
    wait: Duration,
) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind((from, 0)).await.unwrap();
    socket.send_to(bytes, server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    match tokio::time::timeout(wait, socket.recv_from(&mut buf)).await {
        Ok(Ok((len, _))) => Some(buf[..len].to_vec()),
        _ => None,
    }
}

pub async fn ask_udp_from(server: SocketAddr, from: &str, m: &Message) -> Message {
    let bytes = exchange_udp_raw(
        server,
        from.parse().unwrap(),
        &m.to_vec().unwrap(),
        Duration::from_secs(5),
    )
    .await
    .expect("an answer over UDP");
    let reply = Message::from_vec(&bytes).unwrap();
    assert_eq!(reply.metadata.id, m.metadata.id);
    reply
}

pub async fn ask_udp(server: SocketAddr, m: &Message) -> Message {
    ask_udp_from(server, "127.0.0.1", m).await
}

pub async fn ask(server: SocketAddr, qname: &str, qtype: RecordType) -> Message {
    ask_udp(server, &query(qname, qtype, Some((1232, false)))).await
}

/// Sends every message on one TCP connection at once, then reads the answers
/// in the order they arrive.
pub async fn ask_tcp_pipelined(server: SocketAddr, messages: &[Message]) -> Vec<Message> {
    let mut stream = TcpStream::connect(server).await.unwrap();
    let mut out = Vec::new();
    for m in messages {
        let bytes = m.to_vec().unwrap();
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(&bytes);
    }
    stream.write_all(&out).await.unwrap();
    let mut replies = Vec::new();
    for _ in messages {
        let len = tokio::time::timeout(Duration::from_secs(5), stream.read_u16())
            .await
            .expect("a TCP answer in time")
            .unwrap();
        let mut buf = vec![0u8; len as usize];
        stream.read_exact(&mut buf).await.unwrap();
        replies.push(Message::from_vec(&buf).unwrap());
    }
    replies
}

/// The Extended DNS Error in an answer: info-code and text.
pub fn ede(m: &Message) -> Option<(u16, String)> {
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    match m.edns.as_ref()?.options().get(EdnsCode::from(15u16))? {
        EdnsOption::Unknown(_, data) if data.len() >= 2 => Some((
            u16::from_be_bytes([data[0], data[1]]),
            String::from_utf8_lossy(&data[2..]).into_owned(),
        )),
        _ => None,
    }
}

pub fn rdatas(m: &Message) -> Vec<String> {
    m.answers.iter().map(|r| r.data.to_string()).collect()
}
