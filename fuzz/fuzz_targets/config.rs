//! The configuration and the other files a person writes: `config::parse`
//! on any text, then what `[local]` and `[[clients]]` make of a config that
//! parses (zones, records of every type, hosts and lease files), and
//! lookups in the zones built.
//!
//! Input: the text (invalid UTF-8 replaced), split at NUL bytes into the
//! config, a hosts file and a lease file (dnsmasq or ISC format). Paths in
//! the config are replaced so that nothing but those two files is read:
//! no lists, no CA file, no remote lists.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use hickory_proto::rr::RecordType;
use libfuzzer_sys::fuzz_target;
use sinkd::clients::Directory;
use sinkd::config::Loaded;
use sinkd::local::LocalZones;

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sinkd-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

const TYPES: [RecordType; 7] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::CNAME,
    RecordType::PTR,
    RecordType::SOA,
    RecordType::MX,
    RecordType::SRV,
];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\0');
    let config_text = parts.next().unwrap_or("");
    let hosts = parts.next();
    let leases = parts.next().unwrap_or("");

    let Ok(mut config) = sinkd::config::parse(config_text) else {
        return;
    };
    // Only what this input holds is read.
    config.blocking.lists.clear();
    config.blocking.allow.clear();
    config.blocking.answer_ips.clear();
    config.blocking.remote.clear();
    config.upstream.ca_file = None;
    config.dhcp.leases.clear();
    config.firewall.resolve.clear();
    config.local.hosts.clear();
    if let Some(hosts) = hosts {
        let path = dir().join("hosts");
        std::fs::write(&path, hosts).unwrap();
        config.local.hosts.push("hosts".into());
    }
    let names: Vec<String> = config
        .local
        .records
        .iter()
        .map(|r| r.name.clone())
        .chain(config.local.zones.iter().cloned())
        .take(16)
        .collect();
    let loaded = Loaded {
        config,
        path: dir().join("config.toml"),
    };

    let (zones, _problems) = sinkd::local::load(&loaded);
    let _ = zones.counts();
    for name in names
        .iter()
        .map(String::as_str)
        .chain(["nas.home.lan", "home.lan"])
    {
        let name = sinkd::policy::normalize_name(name.trim());
        for qtype in TYPES {
            let _ = zones.lookup(&name, qtype);
        }
        let _ = LocalZones::is_private_reverse(&name);
    }

    let (mut directory, _problems) = sinkd::clients::load_directory(&loaded);
    let _ = directory.add_leases(std::path::Path::new("leases"), leases);
    let _: Directory = directory;
});
