//! Parsed GraphQL documents, kept by their text.
//!
//! async-graphql parses each request's document before it validates and runs it. For the small documents
//! an application sends over and over (a player page's `mediaByPlaybackId`), parsing was the largest part
//! of the server's work per request, more than validating and running it (BENCHMARKS.md, the query
//! scenario). The same text always parses to the same document, so a document parsed once is kept here
//! and handed to async-graphql with the request ([`Request::set_parsed_query`]). async-graphql still
//! checks the document's depth, directives, validity and complexity for every request, as it does for a
//! document it parsed itself; a document that does not parse is not kept, and async-graphql reports its
//! syntax error as before.
//!
//! The cache is bounded by the length of the texts it keeps: each at most [`MAX_TEXT`] (a longer one is
//! parsed for each request, as before), and [`BUDGET`] in all, the least recently used going first.

use std::sync::{Arc, Mutex, MutexGuard};

use async_graphql::Request;
use async_graphql::parser::parse_query;
use async_graphql::parser::types::ExecutableDocument;
use lru::LruCache;

/// Longest text kept, in bytes.
pub const MAX_TEXT: usize = 4 * 1024;
/// Text kept in all, in bytes. A parsed document takes 40 to 110 times the size of its text (measured
/// with async-graphql-parser 7.2: 3.7 KiB for the 89 bytes of the benchmark's `mediaByPlaybackId`
/// query, 415 KiB for 4 KiB of bare fields, the worst case), so the cache holds at most about 7 MiB.
pub const BUDGET: usize = 64 * 1024;

/// Cheap to clone; one per instance.
#[derive(Clone, Default)]
pub struct Documents(Arc<Mutex<Kept>>);

struct Kept {
    documents: LruCache<String, ExecutableDocument>,
    /// The length of every text kept, summed.
    text: usize,
}

impl Default for Kept {
    fn default() -> Self {
        Self {
            documents: LruCache::unbounded(),
            text: 0,
        }
    }
}

impl Kept {
    fn put(&mut self, text: String, document: ExecutableDocument) {
        let length = text.len();
        // Another request may have parsed and kept the same text meanwhile: then it is replaced.
        if self.documents.put(text, document).is_none() {
            self.text += length;
        }
        while self.text > BUDGET {
            let Some((text, _)) = self.documents.pop_lru() else {
                break;
            };
            self.text -= text.len();
        }
    }
}

impl Documents {
    fn lock(&self) -> MutexGuard<'_, Kept> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives `request` its parsed document: the one kept for its text, or parsed now and kept. A text
    /// that does not parse, or longer than [`MAX_TEXT`], is left to async-graphql.
    pub fn parse(&self, request: &mut Request) {
        if request.query.len() > MAX_TEXT {
            return;
        }
        let kept = self.lock().documents.get(&request.query).cloned();
        let document = match kept {
            Some(document) => document,
            None => {
                // Parsed outside the lock.
                let Ok(document) = parse_query(&request.query) else {
                    return;
                };
                self.lock().put(request.query.clone(), document.clone());
                document
            }
        };
        request.set_parsed_query(document);
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

    #[test]
    fn a_text_is_parsed_once_and_its_document_handed_to_every_request_with_it() {
        let documents = Documents::default();
        let mut first = Request::new("{ health }");
        documents.parse(&mut first);
        assert_eq!(documents.lock().documents.len(), 1);
        assert_eq!(field_of(&mut first), "health");
        let mut second = Request::new("{ health }");
        documents.parse(&mut second);
        assert_eq!(documents.lock().documents.len(), 1);
        assert_eq!(field_of(&mut second), "health");
        let mut other = Request::new("{ other }");
        documents.parse(&mut other);
        assert_eq!(documents.lock().documents.len(), 2);
        assert_eq!(field_of(&mut other), "other");
    }

    #[test]
    fn a_text_that_does_not_parse_or_is_too_long_is_left_to_async_graphql() {
        let documents = Documents::default();
        let mut broken = Request::new("{ health ");
        documents.parse(&mut broken);
        assert!(documents.lock().documents.is_empty());
        assert!(
            broken.parsed_query().is_err(),
            "async-graphql parses it itself"
        );
        let long = format!("{{ health {} }}", " ".repeat(MAX_TEXT));
        let mut long = Request::new(long);
        documents.parse(&mut long);
        assert!(documents.lock().documents.is_empty());
        assert_eq!(field_of(&mut long), "health");
    }

    #[test]
    fn the_least_recently_used_documents_go_once_the_texts_kept_pass_the_budget() {
        let documents = Documents::default();
        let text = |n: usize| format!("{{ f{n:04} {} }}", "x ".repeat(1_000));
        let each = text(0).len();
        let fit = BUDGET / each;
        for n in 0..fit {
            documents.parse(&mut Request::new(text(n)));
        }
        assert_eq!(documents.lock().text, fit * each);
        // Used again: the oldest now is 1. One more text passes the budget, and 1 goes.
        documents.parse(&mut Request::new(text(0)));
        documents.parse(&mut Request::new(text(fit)));
        let kept = documents.lock();
        assert_eq!(kept.documents.len(), fit);
        assert_eq!(kept.text, fit * each);
        assert!(kept.text <= BUDGET);
        assert!(kept.documents.contains(&text(0)));
        assert!(!kept.documents.contains(&text(1)));
        assert!(kept.documents.contains(&text(2)));
        assert!(kept.documents.contains(&text(fit)));
    }
}
