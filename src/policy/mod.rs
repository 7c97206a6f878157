//! Policy lists: parsing and matching of blocklists, allowlists and
//! answer-IP lists.
//!
//! * [`parse`]: line parsers (domain lists in plain, hosts, adblock and
//!   `/regex/` forms; answer-IP lists), reporting `LineError`s with 1-based
//!   line numbers.
//! * [`domains`]: [`DomainSet`], the name matcher (64-bit name hashes in a
//!   hash table, a lookup walks the query's label suffixes).
//! * [`ranges`]: [`RangeSet`], longest-prefix match of answer IPs.

pub mod domains;
pub mod parse;
pub mod ranges;

pub use domains::{DomainSet, DomainSetBuilder, Match, Verdict, normalize_name};
pub use parse::{LineError, Rule, RuleKind, RuleRef, parse_domain_list, parse_ip_list};
pub use ranges::{RangeSet, RangeSetBuilder};
