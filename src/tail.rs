//! `sinkd tail`: follows the query log like `tail -f`, one readable line a
//! query, across rotations.
//!
//! Plain blocking std code: it runs alone in its own process, and polling a
//! file every so often needs no runtime.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::querylog::{DeviceFilter, MAX_LINE};

/// How often a file at its end is looked at again.
const POLL: Duration = Duration::from_millis(200);
/// Matching lines shown before following.
const BACKLOG_LINES: usize = 10;
/// How far back to look for them: a filter that matches nothing must not
/// make the start read a whole large file.
const BACKLOG_SCAN: u64 = 8 << 20;
const CHUNK: usize = 64 << 10;

const WHO_WIDTH: usize = 21;
const TYPE_WIDTH: usize = 5;
const NAME_WIDTH: usize = 32;

pub struct TailOptions {
    pub path: PathBuf,
    /// A device name (any case), client IP or MAC.
    pub device: Option<String>,
    /// Only blocked queries.
    pub blocked: bool,
    /// Only names containing this.
    pub name: Option<String>,
    /// The matching lines as they are in the file.
    pub json: bool,
    /// Keep following; false prints the whole file and returns.
    pub follow: bool,
    pub color: bool,
    /// Return after this many lines are printed (tests; `--lines`-style use).
    pub stop_after: Option<usize>,
}

/// Prints the log to `out` as `options` say. Returns when the file is read
/// (`follow: false`), after `stop_after` lines, when `out` is closed (a pipe
/// into `head`), or on an error reading the file.
pub fn run(options: TailOptions, out: &mut dyn Write) -> io::Result<()> {
    let mut tail = Tail {
        filter: Filter::new(&options),
        printed: 0,
        text: String::new(),
        options,
    };
    match tail.run(out) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

struct Tail {
    options: TailOptions,
    filter: Filter,
    printed: usize,
    text: String,
}

/// The fields `sinkd tail` shows or filters on; others are ignored, and a
/// missing optional one is as good as null.
#[derive(Deserialize)]
struct Entry {
    ts: String,
    client: String,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    device: Option<String>,
    name: String,
    #[serde(rename = "type", default)]
    qtype: String,
    action: String,
    #[serde(default)]
    rule: Option<String>,
    #[serde(default)]
    rcode: String,
    #[serde(default)]
    answer: Vec<String>,
    #[serde(default)]
    upstream: Option<String>,
}

impl Tail {
    fn run(&mut self, out: &mut dyn Write) -> io::Result<()> {
        if self.done() {
            return Ok(());
        }
        let (file, waited) = self.open()?;
        let mut reader = if !self.options.follow || waited {
            // Everything in a file that appeared while we waited is new.
            Reader::new(file, 0)?
        } else {
            let mut file = file;
            let end = file.metadata()?.len();
            let (lines, from) = backlog(&mut file, end, BACKLOG_LINES, |line| {
                self.filter.wants(line).is_some()
            })?;
            for line in lines {
                self.print(&line, out)?;
            }
            Reader::new(file, from)?
        };
        loop {
            while let Some(line) = reader.next_line()? {
                self.print(&line, out)?;
                if self.done() {
                    return out.flush();
                }
            }
            out.flush()?;
            if !self.options.follow {
                // A last line without its newline: the writer was mid-line.
                let rest = std::mem::take(&mut reader.pending);
                self.print(&rest, out)?;
                return out.flush();
            }
            match reader.change(&self.options.path) {
                Change::None | Change::Missing => std::thread::sleep(POLL),
                Change::Truncated => reader.rewind()?,
                Change::Replaced => {
                    // Rotated: what was written before the rename is still
                    // in the old file, then the new one starts from 0.
                    while let Some(line) = reader.next_line()? {
                        self.print(&line, out)?;
                        if self.done() {
                            return out.flush();
                        }
                    }
                    match File::open(&self.options.path) {
                        Ok(file) => reader = Reader::new(file, 0)?,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => std::thread::sleep(POLL),
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }

    /// The file, waiting for it to appear when following; `true` if it had
    /// to wait.
    fn open(&self) -> io::Result<(File, bool)> {
        let mut waited = false;
        loop {
            match File::open(&self.options.path) {
                Ok(file) => return Ok((file, waited)),
                Err(e) if e.kind() == io::ErrorKind::NotFound && self.options.follow => {
                    if !waited {
                        eprintln!("sinkd tail: waiting for {}", self.options.path.display());
                    }
                    waited = true;
                    std::thread::sleep(POLL);
                }
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("{}: {e}", self.options.path.display()),
                    ));
                }
            }
        }
    }

    fn done(&self) -> bool {
        self.options.stop_after.is_some_and(|n| self.printed >= n)
    }

    /// Prints `line` if it is a log entry the filters want; anything else
    /// (a torn or foreign line) is skipped.
    fn print(&mut self, line: &[u8], out: &mut dyn Write) -> io::Result<()> {
        let Some(entry) = self.filter.wants(line) else {
            return Ok(());
        };
        self.printed += 1;
        if self.options.json {
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            out.write_all(line)?;
            return out.write_all(b"\n");
        }
        self.text.clear();
        render(&entry, self.options.color, local_hms, &mut self.text);
        self.text.push('\n');
        out.write_all(self.text.as_bytes())
    }
}

struct Filter {
    device: DeviceFilter,
    blocked: bool,
    name: Option<String>,
}

impl Filter {
    fn new(options: &TailOptions) -> Filter {
        Filter {
            device: DeviceFilter::new(options.device.as_deref()),
            blocked: options.blocked,
            name: options
                .name
                .as_deref()
                .map(|n| n.trim().trim_end_matches('.').to_lowercase()),
        }
    }

    /// The parsed entry, if `line` is one and passes every filter.
    fn wants(&self, line: &[u8]) -> Option<Entry> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        let entry: Entry = serde_json::from_slice(line).ok()?;
        if self.blocked && entry.action != "blocked" {
            return None;
        }
        if let Some(name) = &self.name
            && !entry.name.to_lowercase().contains(name.as_str())
        {
            return None;
        }
        self.device
            .wants(entry.device.as_deref(), &entry.client, entry.mac.as_deref())
            .then_some(entry)
    }
}

/// One aligned line, e.g.
/// `19:04:05 Anna's Redmi Note     A     tracking.miui.com                BLOCKED miui.com (xiaomi.txt:12)`.
/// `clock` turns the timestamp into hours, minutes and seconds.
fn render(e: &Entry, color: bool, clock: fn(SystemTime) -> (u8, u8, u8), out: &mut String) {
    let colour = match e.action.as_str() {
        _ if !color => None,
        "blocked" => Some("\x1b[31m"),
        "refused" | "failed" => Some("\x1b[33m"),
        "local" => Some("\x1b[34m"),
        "cached" => Some("\x1b[2m"),
        _ => None,
    };
    if let Some(c) = colour {
        out.push_str(c);
    }
    match humantime::parse_rfc3339(&e.ts) {
        Ok(at) => {
            let (h, m, s) = clock(at);
            let _ = write!(out, "{h:02}:{m:02}:{s:02}");
        }
        // Not ours, but still a time: show what is there.
        Err(_) => out.push_str(e.ts.get(11..19).unwrap_or("--:--:--")),
    }
    out.push(' ');
    pad(out, e.device.as_deref().unwrap_or(&e.client), WHO_WIDTH);
    pad(out, &e.qtype, TYPE_WIDTH);
    pad(out, &e.name, NAME_WIDTH);
    match e.action.as_str() {
        "blocked" => {
            out.push_str("BLOCKED");
            if let Some(rule) = &e.rule {
                out.push(' ');
                describe_rule(rule, out);
            }
        }
        "cached" => {
            out.push_str("cached");
            outcome(e, out);
        }
        "forwarded" => {
            out.push_str("forwarded");
            if let Some(upstream) = &e.upstream {
                let _ = write!(out, " via {upstream}");
            }
            outcome(e, out);
        }
        "local" => {
            out.push_str("local");
            outcome(e, out);
        }
        "refused" => out.push_str("REFUSED"),
        "failed" => {
            out.push_str("FAILED");
            if !e.rcode.is_empty() {
                let _ = write!(out, " {}", e.rcode);
            }
        }
        other => out.push_str(&other.to_uppercase()),
    }
    if colour.is_some() {
        out.push_str("\x1b[0m");
    }
}

/// `value` and one space, padded to `width`; a longer value is kept whole.
fn pad(out: &mut String, value: &str, width: usize) {
    out.push_str(value);
    let len = value.chars().count();
    out.extend(std::iter::repeat_n(' ', width.saturating_sub(len) + 1));
}

/// ` → first answer (+more)`, or the rcode when there is no answer.
fn outcome(e: &Entry, out: &mut String) {
    match e.answer.split_first() {
        Some((first, rest)) => {
            let _ = write!(out, " → {first}");
            if !rest.is_empty() {
                let _ = write!(out, " (+{})", rest.len());
            }
        }
        None if e.rcode == "NOERROR" => out.push_str(" → NODATA"),
        None if !e.rcode.is_empty() => {
            let _ = write!(out, " → {}", e.rcode);
        }
        None => {}
    }
}

/// `blocklists/xiaomi.txt:12 miui.com` → `miui.com (xiaomi.txt:12)`; a rule
/// of another shape is shown as it is.
fn describe_rule(rule: &str, out: &mut String) {
    let parsed = rule.split_once(' ').and_then(|(location, pattern)| {
        let (file, line) = location.rsplit_once(':')?;
        let numeric = !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit());
        numeric.then(|| (file.rsplit('/').next().unwrap_or(file), line, pattern))
    });
    match parsed {
        Some((file, line, pattern)) => {
            let _ = write!(out, "{pattern} ({file}:{line})");
        }
        None => out.push_str(rule),
    }
}

/// Local wall-clock time. UTC if the C library cannot tell.
fn local_hms(at: SystemTime) -> (u8, u8, u8) {
    let secs = match at.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as libc::time_t,
        Err(e) => -(e.duration().as_secs() as libc::time_t) - 1,
    };
    // SAFETY: localtime_r writes only into `tm`, which we own; nothing in
    // `sinkd tail` changes the environment (TZ) while it runs.
    let local = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        (!libc::localtime_r(&secs, &mut tm).is_null()).then_some(tm)
    };
    match local {
        Some(tm) => (tm.tm_hour as u8, tm.tm_min as u8, tm.tm_sec as u8),
        None => utc_hms(at),
    }
}

fn utc_hms(at: SystemTime) -> (u8, u8, u8) {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) % 86_400;
    (
        (secs / 3600) as u8,
        (secs / 60 % 60) as u8,
        (secs % 60) as u8,
    )
}

/// The last `want` lines of `file[..end]` that `keep` accepts, oldest first,
/// looking back at most [`BACKLOG_SCAN`] bytes, and where following should
/// start: after the last complete line (a torn last line is the follower's).
fn backlog(
    file: &mut File,
    end: u64,
    want: usize,
    mut keep: impl FnMut(&[u8]) -> bool,
) -> io::Result<(Vec<Vec<u8>>, u64)> {
    let mut found = Vec::new();
    let mut follow_from = end;
    let mut torn = true;
    let mut carry = Vec::new();
    let mut chunk = vec![0; CHUNK];
    let mut pos = end;
    while pos > 0 && found.len() < want && end - pos < BACKLOG_SCAN {
        let n = CHUNK.min(pos as usize);
        pos -= n as u64;
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(&mut chunk[..n])?;
        let mut text = chunk[..n].to_vec();
        text.append(&mut carry);
        if torn {
            match text.iter().rposition(|&b| b == b'\n') {
                Some(i) => {
                    follow_from = pos + i as u64 + 1;
                    text.truncate(i + 1);
                    torn = false;
                }
                None => {
                    follow_from = pos;
                    continue;
                }
            }
        }
        // `text` ends with a newline. What precedes its first newline may
        // be the tail of a line that began further back.
        let body_start = match text.iter().position(|&b| b == b'\n') {
            Some(i) if pos > 0 => i + 1,
            _ => 0,
        };
        let body = &text[body_start..];
        if !body.is_empty() {
            for line in body[..body.len() - 1].rsplit(|&b| b == b'\n') {
                if keep(line) {
                    found.push(line.to_vec());
                    if found.len() == want {
                        break;
                    }
                }
            }
        }
        text.truncate(body_start);
        carry = text;
    }
    found.reverse();
    Ok((found, follow_from))
}

enum Change {
    None,
    /// `path` is gone (mid-rotation): keep the old file until it is back.
    Missing,
    /// `path` now names another file: a rotation.
    Replaced,
    /// Same file, shorter than what was read: truncated in place.
    Truncated,
}

/// Complete lines of one file from a position on; a torn last line waits in
/// `pending` for the rest.
struct Reader {
    inner: BufReader<File>,
    id: (u64, u64),
    pos: u64,
    pending: Vec<u8>,
    skipping: bool,
}

impl Reader {
    fn new(mut file: File, from: u64) -> io::Result<Reader> {
        let meta = file.metadata()?;
        file.seek(SeekFrom::Start(from))?;
        Ok(Reader {
            inner: BufReader::with_capacity(CHUNK, file),
            id: (meta.dev(), meta.ino()),
            pos: from,
            pending: Vec::new(),
            skipping: false,
        })
    }

    fn next_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            let n = self.inner.read_until(b'\n', &mut self.pending)?;
            if n == 0 {
                return Ok(None);
            }
            self.pos += n as u64;
            let complete = self.pending.last() == Some(&b'\n');
            if complete && !self.skipping {
                return Ok(Some(std::mem::take(&mut self.pending)));
            }
            if complete || self.pending.len() > MAX_LINE {
                self.skipping = !complete;
                self.pending.clear();
            }
        }
    }

    fn change(&self, path: &Path) -> Change {
        match fs::metadata(path) {
            Ok(meta) if (meta.dev(), meta.ino()) != self.id => Change::Replaced,
            Ok(meta) if meta.len() < self.pos => Change::Truncated,
            Ok(_) => Change::None,
            Err(_) => Change::Missing,
        }
    }

    fn rewind(&mut self) -> io::Result<()> {
        self.inner.seek(SeekFrom::Start(0))?;
        self.pos = 0;
        self.pending.clear();
        self.skipping = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex, mpsc};
    use std::time::Instant;

    const BLOCKED: &str = r#"{"ts":"2026-11-23T19:04:05.123Z","client":"192.168.1.23","mac":"aa:bb:cc:dd:ee:ff","device":"Anna's Redmi Note","group":"phones","proto":"udp","name":"tracking.miui.com","type":"A","action":"blocked","rule":"blocklists/xiaomi.txt:12 miui.com","rcode":"NOERROR","answer":["0.0.0.0"],"upstream":null,"ms":0.04}"#;

    fn entry(action: &str, extra: &str) -> String {
        format!(
            r#"{{"ts":"2026-11-23T07:08:09.000Z","client":"192.168.1.40","mac":null,"device":null,"group":null,"proto":"udp","name":"www.example.com","type":"AAAA","action":"{action}","rule":null,"rcode":"NOERROR","answer":[],"upstream":null,"ms":1.5{extra}}}"#
        )
    }

    fn parse(line: &str) -> Entry {
        serde_json::from_str(line).unwrap()
    }

    fn show(line: &str, color: bool) -> String {
        let mut out = String::new();
        render(&parse(line), color, utc_hms, &mut out);
        out
    }

    fn options(path: &Path) -> TailOptions {
        TailOptions {
            path: path.to_owned(),
            device: None,
            blocked: false,
            name: None,
            json: false,
            follow: false,
            color: false,
            stop_after: None,
        }
    }

    fn tail(options: TailOptions) -> String {
        let mut out = Vec::new();
        run(options, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn with(line: &str, key: &str, value: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        v[key] = serde_json::from_str(value).unwrap();
        v.to_string()
    }

    #[test]
    fn renders_one_aligned_line_per_action() {
        assert_eq!(
            show(BLOCKED, false),
            "19:04:05 Anna's Redmi Note     A     tracking.miui.com                BLOCKED miui.com (xiaomi.txt:12)"
        );
        let line = |action: &str, patch: &[(&str, &str)]| {
            let mut l = entry(action, "");
            for (k, v) in patch {
                l = with(&l, k, v);
            }
            show(&l, false)
        };
        let prefix = "07:08:09 192.168.1.40          AAAA  www.example.com                  ";
        assert_eq!(
            line("cached", &[("answer", r#"["2001:db8::1"]"#)]),
            format!("{prefix}cached → 2001:db8::1")
        );
        assert_eq!(
            line(
                "forwarded",
                &[
                    ("answer", r#"["cdn.example.net","2001:db8::1"]"#),
                    ("upstream", r#""tls://9.9.9.9:853""#)
                ]
            ),
            format!("{prefix}forwarded via tls://9.9.9.9:853 → cdn.example.net (+1)")
        );
        assert_eq!(
            line("forwarded", &[("rcode", r#""NXDOMAIN""#)]),
            format!("{prefix}forwarded → NXDOMAIN")
        );
        assert_eq!(line("cached", &[]), format!("{prefix}cached → NODATA"));
        assert_eq!(
            line("local", &[("answer", r#"["192.168.1.2"]"#)]),
            format!("{prefix}local → 192.168.1.2")
        );
        assert_eq!(
            line("refused", &[("rcode", r#""REFUSED""#)]),
            format!("{prefix}REFUSED")
        );
        assert_eq!(
            line("failed", &[("rcode", r#""SERVFAIL""#)]),
            format!("{prefix}FAILED SERVFAIL")
        );
        // Answer inspection names the range and the answer; unusual rules as they are.
        assert_eq!(
            line(
                "blocked",
                &[(
                    "rule",
                    r#""lists/x.cidr:3 42.62.48.0/24 (answer 42.62.48.157)""#
                )]
            ),
            format!("{prefix}BLOCKED 42.62.48.0/24 (answer 42.62.48.157) (x.cidr:3)")
        );
        assert_eq!(
            line("blocked", &[("rule", r#""custom rule""#)]),
            format!("{prefix}BLOCKED custom rule")
        );
        // Long values push the columns rather than being cut.
        let long = "a-very-long-label.with.many.parts.example.com";
        assert!(
            line("cached", &[("name", &format!("\"{long}\""))]).contains(&format!("{long} cached"))
        );
    }

    #[test]
    fn colours_only_when_asked() {
        assert_eq!(
            show(BLOCKED, true),
            "\x1b[31m19:04:05 Anna's Redmi Note     A     tracking.miui.com                BLOCKED miui.com (xiaomi.txt:12)\x1b[0m"
        );
        assert!(show(&entry("refused", ""), true).starts_with("\x1b[33m"));
        assert!(show(&entry("failed", ""), true).starts_with("\x1b[33m"));
        assert!(show(&entry("local", ""), true).starts_with("\x1b[34m"));
        assert!(show(&entry("cached", ""), true).starts_with("\x1b[2m"));
        assert!(!show(&entry("forwarded", ""), true).contains('\x1b'));
        for action in [
            "blocked",
            "refused",
            "failed",
            "local",
            "cached",
            "forwarded",
        ] {
            assert!(!show(&entry(action, ""), false).contains('\x1b'));
        }
    }

    #[test]
    fn local_time_is_a_time_of_day() {
        let at = UNIX_EPOCH + Duration::from_secs(1_795_460_645);
        let (h, m, s) = local_hms(at);
        assert!(h < 24 && m < 60 && s < 60);
        // Time zones differ from UTC by whole quarter hours.
        assert_eq!(s, 5);
        assert_eq!(m % 15, 4);
        assert_eq!(utc_hms(at), (19, 4, 5));
    }

    fn log_file(dir: &Path, lines: &[String]) -> PathBuf {
        let path = dir.join("querylog.jsonl");
        let mut text = lines.join("\n");
        text.push('\n');
        fs::write(&path, text).unwrap();
        path
    }

    fn sample() -> Vec<String> {
        vec![
            BLOCKED.to_owned(),
            "not json at all".to_owned(),
            with(&entry("forwarded", ""), "name", r#""api.example.org""#),
            String::new(),
            r#"{"ts":"2026-11-23T07:08:09.000Z","truncated"#.to_owned(),
            with(
                &with(&entry("cached", ""), "device", r#""Living Room TV""#),
                "mac",
                r#""00:11:22:33:44:55""#,
            ),
            with(&entry("blocked", ""), "client", r#""10.0.0.9""#),
        ]
    }

    #[test]
    fn skips_malformed_lines_and_filters() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_file(dir.path(), &sample());
        let count = |o: TailOptions| tail(o).lines().count();

        assert_eq!(count(options(&path)), 4);
        assert_eq!(
            count(TailOptions {
                blocked: true,
                ..options(&path)
            }),
            2
        );
        let names = |o: TailOptions| -> Vec<String> {
            tail(TailOptions { json: true, ..o })
                .lines()
                .map(|l| parse(l).name)
                .collect()
        };
        assert_eq!(
            names(TailOptions {
                name: Some("EXAMPLE".into()),
                ..options(&path)
            }),
            ["api.example.org", "www.example.com", "www.example.com"]
        );
        assert_eq!(
            names(TailOptions {
                name: Some("miui".into()),
                ..options(&path)
            }),
            ["tracking.miui.com"]
        );
        let device = |d: &str| -> Vec<String> {
            names(TailOptions {
                device: Some(d.into()),
                ..options(&path)
            })
        };
        assert_eq!(device("anna's redmi note"), ["tracking.miui.com"]);
        assert_eq!(device("living room tv"), ["www.example.com"]);
        assert_eq!(device("00-11-22-33-44-55"), ["www.example.com"]);
        assert_eq!(device("AA:BB:CC:DD:EE:FF"), ["tracking.miui.com"]);
        assert_eq!(device("10.0.0.9"), ["www.example.com"]);
        assert_eq!(device("192.168.1.40").len(), 2);
        assert!(device("nobody").is_empty());
        assert_eq!(
            names(TailOptions {
                device: Some("192.168.1.40".into()),
                blocked: true,
                ..options(&path)
            })
            .len(),
            0
        );
    }

    #[test]
    fn json_prints_lines_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let lines = sample();
        let path = log_file(dir.path(), &lines);
        let got = tail(TailOptions {
            json: true,
            blocked: true,
            ..options(&path)
        });
        assert_eq!(got, format!("{}\n{}\n", lines[0], lines[6]));
    }

    #[test]
    fn a_last_line_without_newline_is_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.jsonl");
        fs::write(&path, format!("{BLOCKED}\n{}", entry("cached", ""))).unwrap();
        assert_eq!(tail(options(&path)).lines().count(), 2);
    }

    #[test]
    fn a_missing_file_is_an_error_when_not_following() {
        let dir = tempfile::tempdir().unwrap();
        let err = run(options(&dir.path().join("none")), &mut Vec::new()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn backlog_finds_the_last_matching_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.jsonl");
        // Lines of all lengths across chunk boundaries, and a torn last line.
        let mut text = String::new();
        for i in 0..5000 {
            text.push_str(&format!("{i} {}\n", "x".repeat(i % 97)));
        }
        text.push_str("torn");
        fs::write(&path, &text).unwrap();
        let mut file = File::open(&path).unwrap();
        let end = text.len() as u64;
        let first = |l: &[u8]| -> u32 {
            std::str::from_utf8(l)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        let (lines, from) = backlog(&mut file, end, 10, |_| true).unwrap();
        assert_eq!(
            lines.iter().map(|l| first(l)).collect::<Vec<_>>(),
            (4990..5000).collect::<Vec<_>>()
        );
        assert_eq!(from, end - 4);
        let (lines, _) = backlog(&mut file, end, 3, |l| first(l) % 1000 == 0).unwrap();
        assert_eq!(
            lines.iter().map(|l| first(l)).collect::<Vec<_>>(),
            [2000, 3000, 4000]
        );
        let (lines, _) = backlog(&mut file, end, 10, |l| first(l) < 2).unwrap();
        assert_eq!(lines.iter().map(|l| first(l)).collect::<Vec<_>>(), [0, 1]);
        for want in [1, 10, 4999] {
            let (lines, _) = backlog(&mut file, end, want, |l| {
                assert!(!l.contains(&b'\n') && !l.is_empty() && l != b"torn");
                true
            })
            .unwrap();
            assert_eq!(lines.len(), want);
            assert_eq!(first(&lines[0]) as usize, 5000 - want);
        }
        let (lines, from) = backlog(&mut file, 0, 10, |_| true).unwrap();
        assert!(lines.is_empty());
        assert_eq!(from, 0);
    }

    /// Output a test can read while `run` writes it from another thread.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }

        fn wait_for(&self, lines: usize) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.text().lines().count() < lines {
                assert!(
                    Instant::now() < deadline,
                    "waited for {lines} lines, got:\n{}",
                    self.text()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Runs a following tail in a thread; returns its output and a handle
    /// that yields the result, bounded in time.
    fn follow(options: TailOptions) -> (Shared, mpsc::Receiver<io::Result<()>>) {
        let out = Shared::default();
        let (done, result) = mpsc::channel();
        let mut writer = out.clone();
        std::thread::spawn(move || {
            let _ = done.send(run(options, &mut writer));
        });
        (out, result)
    }

    fn named(name: &str) -> String {
        with(&entry("cached", ""), "name", &format!("\"{name}\""))
    }

    fn append(path: &Path, lines: &[&str]) {
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        for line in lines {
            writeln!(file, "{}", named(line)).unwrap();
        }
    }

    fn names_in(out: &str) -> Vec<String> {
        out.lines().map(|l| parse(l).name).collect()
    }

    #[test]
    fn follows_across_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.jsonl");
        let old: Vec<String> = (0..12).map(|i| format!("old{i}")).collect();
        append(&path, &old.iter().map(String::as_str).collect::<Vec<_>>());
        let (out, result) = follow(TailOptions {
            follow: true,
            json: true,
            stop_after: Some(10 + 5),
            ..options(&path)
        });
        out.wait_for(10);
        append(&path, &["a"]);
        out.wait_for(11);
        // Written just before the rename: must still be read from the old file.
        append(&path, &["b"]);
        fs::rename(&path, dir.path().join("q.jsonl.1")).unwrap();
        append(&path, &["c", "d"]);
        // Torn line: only its completed form counts.
        let mut file = fs::OpenOptions::new().append(true).open(&path).unwrap();
        let last = named("e");
        let (head, rest) = last.split_at(30);
        write!(file, "{head}").unwrap();
        file.flush().unwrap();
        std::thread::sleep(POLL + POLL / 2);
        writeln!(file, "{rest}").unwrap();
        result
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
            .unwrap();
        let mut want: Vec<String> = old[2..].to_vec();
        want.extend(["a", "b", "c", "d", "e"].map(String::from));
        assert_eq!(names_in(&out.text()), want);
    }

    #[test]
    fn follows_a_truncated_file_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.jsonl");
        append(&path, &["one", "two"]);
        let (out, result) = follow(TailOptions {
            follow: true,
            json: true,
            stop_after: Some(3),
            ..options(&path)
        });
        out.wait_for(2);
        fs::write(&path, "").unwrap();
        std::thread::sleep(POLL + POLL / 2);
        append(&path, &["three"]);
        result
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
            .unwrap();
        assert_eq!(names_in(&out.text()), ["one", "two", "three"]);
    }

    #[test]
    fn waits_for_the_file_and_filters_the_backlog() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("later.jsonl");
        let (out, result) = follow(TailOptions {
            follow: true,
            json: true,
            name: Some("keep".into()),
            stop_after: Some(2),
            ..options(&path)
        });
        std::thread::sleep(POLL + POLL / 2);
        append(&path, &["keep1", "skip", "keep2"]);
        result
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
            .unwrap();
        assert_eq!(names_in(&out.text()), ["keep1", "keep2"]);

        // Started on an existing file: the last matching lines, from far back.
        let mut lines = vec!["keep-old"];
        lines.extend(std::iter::repeat_n("skip", 50));
        append(&path, &lines);
        let (out, result) = follow(TailOptions {
            follow: true,
            json: true,
            name: Some("keep".into()),
            stop_after: Some(4),
            ..options(&path)
        });
        out.wait_for(3);
        append(&path, &["skip", "keep-new"]);
        result
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
            .unwrap();
        assert_eq!(
            names_in(&out.text()),
            ["keep1", "keep2", "keep-old", "keep-new"]
        );
    }

    #[test]
    fn a_closed_pipe_ends_quietly() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = log_file(dir.path(), &sample());
        run(
            TailOptions {
                follow: true,
                ..options(&path)
            },
            &mut Closed,
        )
        .unwrap();
    }
}
