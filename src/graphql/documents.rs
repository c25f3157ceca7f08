//! Parsed GraphQL documents, kept by their text.
//!
//! async-graphql parses each request's document before it validates and runs it. For the small documents
//! an application sends over and over (a player page's `mediaByPlaybackId`), parsing was the largest part
//! of the server's work per request: 18% of the server's CPU samples in the query benchmark, more than
//! validating and running the requests (BENCHMARKS.md). The same text always parses to the same document,
//! so a document parsed once is kept here and handed to async-graphql with the request
//! ([`Request::set_parsed_query`]). async-graphql still checks the document's depth, directives, validity
//! and complexity for every request, as it does for a document it parsed itself, and works on the
//! request's own copy. A document that does not parse is not kept: async-graphql parses it again and
//! reports its syntax error as before.
//!
//! The cache is bounded by an estimate of its memory, [`BUDGET`], the least recently used documents going
//! first; a text longer than [`MAX_TEXT`] is parsed for its request and not kept.

use std::sync::{Arc, Mutex, MutexGuard};

use async_graphql::Request;
use async_graphql::parser::parse_query;
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationDefinition, OperationType,
};
use lru::LruCache;
use prometheus::IntCounter;

use crate::metrics::Metrics;

/// Longest text kept, in bytes.
pub const MAX_TEXT: usize = 4 * 1024;
/// What the kept documents may take in all, in bytes, as [`charge`] estimates it.
pub const BUDGET: usize = 16 * 1024 * 1024;

/// An upper bound of the memory a parsed document of `text` takes, with its key. Measured with
/// async-graphql-parser 7.2 (heap bytes, allocator overhead aside): the 89 bytes of the benchmark's
/// `mediaByPlaybackId` query parse to 3.7 KiB; 4 KiB of bare fields to 415 KiB; 4 KiB of nested
/// selections (`{a{b}a{b}…}`), the worst case found, to about 970 KiB; a tiny text (`{ab}`) to about
/// 1 KiB.
fn charge(text: &str) -> usize {
    1024 + 256 * text.len()
}

/// Cheap to clone; one per instance.
#[derive(Clone)]
pub struct Documents(Arc<Shared>);

struct Shared {
    kept: Mutex<Kept>,
    /// Requests by where their document came from.
    from_cache: IntCounter,
    parsed: IntCounter,
    not_kept: IntCounter,
}

struct Kept {
    documents: LruCache<String, Arc<ExecutableDocument>>,
    /// The [`charge`] of every document kept, summed.
    charged: usize,
}

impl Kept {
    /// Keeps `document`; returns what that pushed out, to be dropped once the lock is released.
    fn put(
        &mut self,
        text: String,
        document: Arc<ExecutableDocument>,
    ) -> Vec<Arc<ExecutableDocument>> {
        let charged = charge(&text);
        // Another request may have parsed and kept the same text meanwhile: it is then replaced.
        let mut out: Vec<_> = self.documents.put(text, document).into_iter().collect();
        if out.is_empty() {
            self.charged += charged;
        }
        while self.charged > BUDGET {
            let Some((text, document)) = self.documents.pop_lru() else {
                break;
            };
            self.charged -= charge(&text);
            out.push(document);
        }
        out
    }
}

impl Documents {
    pub fn new(metrics: &Metrics) -> Self {
        Self(Arc::new(Shared {
            kept: Mutex::new(Kept {
                documents: LruCache::unbounded(),
                charged: 0,
            }),
            from_cache: metrics.graphql_documents("kept"),
            parsed: metrics.graphql_documents("parsed"),
            not_kept: metrics.graphql_documents("not_kept"),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Kept> {
        self.0.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives `request` its parsed document: the one kept for its text, or parsed now (and kept, unless
    /// the text is longer than [`MAX_TEXT`]). `false` when the text does not parse: async-graphql then
    /// reports the error as it runs the request.
    pub fn parse(&self, request: &mut Request) -> bool {
        let keepable = request.query.len() <= MAX_TEXT;
        // A long text is not looked up: it would be hashed under the lock for nothing.
        let kept = keepable
            .then(|| self.lock().documents.get(&request.query).cloned())
            .flatten();
        // Copied outside the lock: async-graphql removes skipped fields from its copy.
        let document = match kept {
            Some(document) => {
                self.0.from_cache.inc();
                ExecutableDocument::clone(&document)
            }
            None => {
                let Ok(document) = parse_query(&request.query) else {
                    self.0.not_kept.inc();
                    return false;
                };
                if !keepable {
                    self.0.not_kept.inc();
                } else {
                    self.0.parsed.inc();
                    let text = request.query.clone();
                    let kept = Arc::new(document.clone());
                    // The guard goes at the end of this statement, what was pushed out after it.
                    let out = self.lock().put(text, kept);
                    drop(out);
                }
                document
            }
        };
        request.set_parsed_query(document);
        true
    }

    /// Gives `request` its parsed document ([`Documents::parse`]) and tells what it runs ([`kind`]);
    /// `query` for a document that does not parse, which answers its error at once, as a query (and is
    /// not parsed again).
    pub fn parse_kind(&self, request: &mut Request) -> &'static str {
        if self.parse(request) {
            kind(request)
        } else {
            "query"
        }
    }
}

/// The operation `request` runs: its document's only one, or the one its `operationName` names. `None`
/// when the document does not parse or names no such operation (async-graphql reports either as it runs).
/// Give the request its document first ([`Documents::parse`]), or this parses it.
pub fn operation(request: &mut Request) -> Option<&OperationDefinition> {
    let operation_name = request.operation_name.clone();
    let document = request.parsed_query().ok()?;
    let operation = match (&document.operations, &operation_name) {
        (DocumentOperations::Single(operation), _) => operation,
        (DocumentOperations::Multiple(operations), Some(name)) => operations.get(name.as_str())?,
        (DocumentOperations::Multiple(_), None) => return None,
    };
    Some(&operation.node)
}

/// Whether `request` runs a query (not a subscription, nor a document that fails to parse).
pub fn is_query(request: &mut Request) -> bool {
    operation(request).is_some_and(|o| o.ty == OperationType::Query)
}

/// `query`, `mutation` or `subscription`: what `request` runs, from its parsed document; `query` for one
/// that names no such operation (it answers its error at once, as a query).
fn kind(request: &mut Request) -> &'static str {
    match operation(request).map(|o| o.ty) {
        Some(OperationType::Subscription) => "subscription",
        Some(OperationType::Mutation) => "mutation",
        Some(OperationType::Query) | None => "query",
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::parser::types::DocumentOperations;

    use super::*;

    fn field_of(request: &mut Request) -> String {
        let document = request.parsed_query().expect("a parsed document");
        let DocumentOperations::Single(operation) = &document.operations else {
            panic!("one operation");
        };
        let async_graphql::parser::types::Selection::Field(field) =
            &operation.node.selection_set.node.items[0].node
        else {
            panic!("a field");
        };
        field.node.name.node.to_string()
    }

    fn counts(documents: &Documents) -> [u64; 3] {
        let shared = &documents.0;
        [&shared.from_cache, &shared.parsed, &shared.not_kept].map(IntCounter::get)
    }

    #[test]
    fn a_text_is_parsed_once_and_its_document_handed_to_every_request_with_it() {
        let documents = Documents::new(&Metrics::new());
        let mut first = Request::new("{ health }");
        assert!(documents.parse(&mut first));
        assert_eq!(field_of(&mut first), "health");
        let mut second = Request::new("{ health }");
        assert!(documents.parse(&mut second));
        assert_eq!(field_of(&mut second), "health");
        let mut other = Request::new("{ other }");
        assert!(documents.parse(&mut other));
        assert_eq!(field_of(&mut other), "other");
        assert_eq!(documents.lock().documents.len(), 2);
        assert_eq!(counts(&documents), [1, 2, 0]);
    }

    #[test]
    fn a_request_is_of_the_kind_of_the_operation_it_runs_whatever_comes_first_in_its_text() {
        let documents = Documents::new(&Metrics::new());
        let kind_of = |text: &str, name: Option<&str>| {
            let mut request = Request::new(text);
            request.operation_name = name.map(str::to_owned);
            documents.parse_kind(&mut request)
        };
        assert_eq!(kind_of("{ health }", None), "query");
        assert_eq!(
            kind_of("fragment F on Q { a } subscription { b { ...F } }", None),
            "subscription"
        );
        assert_eq!(
            kind_of("subscription S { a } query Q { b }", Some("Q")),
            "query"
        );
        assert_eq!(
            kind_of("query Q { a } subscription S { b }", Some("S")),
            "subscription"
        );
        assert_eq!(
            kind_of("query Q { a } mutation M { b }", Some("M")),
            "mutation"
        );
        // No operation to run, or no document: answered as a query, with its error.
        assert_eq!(kind_of("query Q { a } subscription S { b }", None), "query");
        assert_eq!(kind_of("subscription { a ", None), "query");
        // The text asked twice came from the cache; the one that does not parse was not kept.
        assert_eq!(counts(&documents), [1, 5, 1]);
    }

    #[test]
    fn a_text_that_does_not_parse_is_left_to_async_graphql_and_a_long_one_is_not_kept() {
        let documents = Documents::new(&Metrics::new());
        let mut broken = Request::new("{ health ");
        assert!(!documents.parse(&mut broken));
        assert!(
            broken.parsed_query().is_err(),
            "async-graphql parses it itself"
        );
        let long = format!("{{ health {} }}", " ".repeat(MAX_TEXT));
        for _ in 0..2 {
            let mut request = Request::new(long.clone());
            assert!(documents.parse(&mut request));
            assert_eq!(field_of(&mut request), "health");
        }
        assert!(documents.lock().documents.is_empty());
        assert_eq!(documents.lock().charged, 0);
        assert_eq!(counts(&documents), [0, 0, 3]);
    }

    #[test]
    fn the_same_text_kept_twice_is_charged_once() {
        let documents = Documents::new(&Metrics::new());
        let document = || Arc::new(parse_query("{ health }").unwrap());
        let mut kept = documents.lock();
        assert!(kept.put("{ health }".into(), document()).is_empty());
        let out = kept.put("{ health }".into(), document());
        assert_eq!(out.len(), 1, "the replaced document");
        assert_eq!(kept.documents.len(), 1);
        assert_eq!(kept.charged, charge("{ health }"));
    }

    #[test]
    fn the_least_recently_used_documents_go_once_the_budget_is_passed() {
        let documents = Documents::new(&Metrics::new());
        let text = |n: usize| format!("{{ f{n:04} {} }}", "x ".repeat(1_000));
        let each = charge(&text(0));
        let fit = BUDGET / each;
        for n in 0..fit {
            documents.parse(&mut Request::new(text(n)));
        }
        assert_eq!(documents.lock().charged, fit * each);
        // Used again: the oldest now is 1. One more text passes the budget, and 1 goes.
        documents.parse(&mut Request::new(text(0)));
        documents.parse(&mut Request::new(text(fit)));
        let kept = documents.lock();
        assert_eq!(kept.documents.len(), fit);
        assert_eq!(kept.charged, fit * each);
        assert!(kept.charged <= BUDGET);
        assert!(kept.documents.contains(&text(0)));
        assert!(!kept.documents.contains(&text(1)));
        assert!(kept.documents.contains(&text(2)));
        assert!(kept.documents.contains(&text(fit)));
    }
}
