//! The audit log: one event per parcel operation, written when it ends.
//!
//! Every request on a parcel route (v1 and v2 upload, download, remove,
//! inspect; tus create, `PATCH`, `HEAD`, `DELETE`) gets an audit [`Record`]
//! when [`crate::observe`] starts it, refused or not. The request's task
//! fills it as it goes (the proven caller, in [`crate::auth`]; the parcel
//! id, in the upload handlers; the error code, where errors become
//! answers), the request body counts the bytes read from the client, and
//! the answer's body the bytes handed to the connection. The event is
//! written when the record is dropped: when the answer's body ended or was
//! cut (the client went away, the connection closed), or, for an answer
//! that was never sent, when the request's future was dropped. So a
//! streamed download's event carries the bytes actually sent, and comes
//! after them.
//!
//! Events go to the target [`TARGET`] (`amo_storage::audit`), at `info`,
//! with the message `audit`, so an `AMO_LOG` filter or a log shipper can
//! route them apart. They carry no header: never a token, key or signature.

use std::{
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use poem::{Body, http::Method};

use crate::domain::{Address, ClientAddress, ParcelId};

/// The tracing target of audit events.
pub const TARGET: &str = "amo_storage::audit";

tokio::task_local! {
    static CURRENT: Arc<Record>;
}

/// The audited operation of a request on the spec's route `template` with
/// `method` and `query`, if it is a parcel operation. A closed set of
/// names; a v1 `GET` with `key` is an inspection.
pub fn operation(template: &str, method: &Method, query: Option<&str>) -> Option<&'static str> {
    let inspects = query.is_some_and(|query| {
        query
            .split('&')
            .any(|pair| pair.split('=').next() == Some("key"))
    });
    Some(match (template, method.as_str()) {
        ("/api/v1/parcels", "POST") => "v1_upload",
        ("/api/v1/parcels/{id}", "GET") if inspects => "v1_inspect",
        ("/api/v1/parcels/{id}", "GET") => "v1_download",
        ("/api/v1/parcels/{id}", "DELETE") => "v1_remove",
        ("/api/v2/parcels", "POST") => "v2_upload",
        ("/api/v2/parcels/{id}", "GET") => "v2_download",
        ("/api/v2/parcels/{id}", "DELETE") => "v2_remove",
        ("/api/v2/parcels/{id}/metadata", "GET") => "v2_inspect",
        ("/api/v2/uploads", "POST") => "tus_create",
        ("/api/v2/uploads/{id}", "HEAD") => "tus_head",
        ("/api/v2/uploads/{id}", "PATCH") => "tus_patch",
        ("/api/v2/uploads/{id}", "DELETE") => "tus_delete",
        _ => return None,
    })
}

/// What is known of one audited request; written as one event when the
/// last holder drops it.
pub struct Record {
    request_id: String,
    client: ClientAddress,
    operation: &'static str,
    started: Instant,
    bytes_in: Arc<AtomicU64>,
    bytes_out: AtomicU64,
    body_complete: AtomicBool,
    known: Mutex<Known>,
}

/// The parts of a record learnt as the request goes.
#[derive(Default)]
struct Known {
    account: Option<Address>,
    parcel: Option<String>,
    upload: Option<String>,
    status: u16,
    code: Option<String>,
    /// The answer's `Content-Length`: hyper stops polling a body once it
    /// sent that many bytes, so its end is never seen.
    length: Option<u64>,
}

impl Record {
    /// A record of `operation` on `path` (its parcel or upload id, when the
    /// path names a valid one), for the request `request_id` of `client`.
    pub fn start(
        operation: &'static str,
        request_id: &str,
        client: ClientAddress,
        path: &str,
    ) -> Arc<Self> {
        let mut known = Known::default();
        let segments: Vec<&str> = path.split('/').collect();
        match segments.as_slice() {
            ["", "api", _, "parcels", id, ..] => {
                known.parcel = ParcelId::parse(id).ok().map(|id| id.to_string());
            }
            ["", "api", "v2", "uploads", id] if crate::parcels::valid_upload_id(id) => {
                known.upload = Some((*id).to_owned());
            }
            _ => {}
        }
        Arc::new(Self {
            request_id: request_id.to_owned(),
            client,
            operation,
            started: Instant::now(),
            bytes_in: Arc::new(AtomicU64::new(0)),
            bytes_out: AtomicU64::new(0),
            body_complete: AtomicBool::new(false),
            known: Mutex::new(known),
        })
    }

    /// Runs `future` (the request's handling) with `record` as the task's
    /// current record, which [`caller`], [`parcel`] and [`code`] fill.
    pub async fn scope<F: Future>(record: Arc<Self>, future: F) -> F::Output {
        CURRENT.scope(record, future).await
    }

    /// `body` (the request's), counting the bytes read from it as bytes in.
    pub fn count_in(&self, body: Body) -> Body {
        Body::from(BoxBody::new(Counted {
            inner: body.into(),
            side: Side::In(self.bytes_in.clone()),
        }))
    }

    /// `body` (the answer's), counting the bytes sent as bytes out; the
    /// body keeps `record` alive until it ends or is dropped.
    pub fn count_out(record: Arc<Self>, body: Body) -> Body {
        Body::from(BoxBody::new(Counted {
            inner: body.into(),
            side: Side::Out(record),
        }))
    }

    /// Records the answer's status, its length (`Content-Length`) and what
    /// its headers say of the upload (`Location`) and the parcel
    /// (`X-Parcel-Id`).
    pub fn answered(
        &self,
        status: u16,
        length: Option<u64>,
        location: Option<&str>,
        parcel_id: Option<&str>,
    ) {
        let mut known = self.known();
        known.status = status;
        known.length = length;
        if known.upload.is_none() {
            known.upload = location
                .and_then(|location| location.rsplit('/').next())
                .filter(|id| crate::parcels::valid_upload_id(id))
                .map(str::to_owned);
        }
        if let Some(id) = parcel_id.and_then(|id| ParcelId::parse(id).ok()) {
            known.parcel = Some(id.to_string());
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let known = self.known();
        let failed = known.status >= 400 || known.status == 0;
        let bytes_out = self.bytes_out.load(Ordering::Relaxed);
        let body_complete =
            self.body_complete.load(Ordering::Relaxed) || known.length == Some(bytes_out);
        tracing::info!(
            target: TARGET,
            request_id = %self.request_id,
            client = %self.client,
            account = known.account.as_ref().map(Address::as_str),
            operation = self.operation,
            parcel = known.parcel.as_deref(),
            upload = known.upload.as_deref(),
            bytes_in = self.bytes_in.load(Ordering::Relaxed),
            bytes_out,
            status = known.status,
            code = known.code.as_deref().filter(|_| failed),
            body_complete,
            duration_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            "audit"
        );
    }
}

/// Notes the proven caller of the current request, if it is audited.
pub fn caller(account: &Address) {
    let _ = CURRENT.try_with(|record| record.known().account = Some(account.clone()));
}

/// Notes the parcel the current request stored or touched, if it is
/// audited.
pub fn parcel(id: &ParcelId) {
    let _ = CURRENT.try_with(|record| record.known().parcel = Some(id.to_string()));
}

/// Notes the error code the current request answers, if it is audited.
pub fn code(code: &str) {
    let _ = CURRENT.try_with(|record| record.known().code = Some(code.to_owned()));
}

/// Which count a [`Counted`] body adds to.
enum Side {
    /// Bytes read from the client.
    In(Arc<AtomicU64>),
    /// Bytes sent to the client; the record lives as long as the body.
    Out(Arc<Record>),
}

/// A body that counts its data as it passes, and says nothing else of
/// itself than the body it wraps (its size hint stays, so a known length
/// is still sent as `Content-Length`).
struct Counted {
    inner: BoxBody<Bytes, std::io::Error>,
    side: Side,
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let counter = match &self.side {
                        Side::In(counter) => counter,
                        Side::Out(record) => &record.bytes_out,
                    };
                    counter.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
            }
            Poll::Ready(None) => {
                if let Side::Out(record) = &self.side {
                    record.body_complete.store(true, Ordering::Relaxed);
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        // An answer without a body (a HEAD, a 204) is never polled.
        if let Side::Out(record) = &self.side {
            if self.inner.is_end_stream() {
                record.body_complete.store(true, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_parcel_routes_are_audited() {
        assert_eq!(
            operation("/api/v2/parcels/{id}", &Method::GET, None),
            Some("v2_download")
        );
        assert_eq!(
            operation("/api/v1/parcels/{id}", &Method::GET, Some("key=owner")),
            Some("v1_inspect")
        );
        assert_eq!(
            operation("/api/v2/uploads/{id}", &Method::PATCH, None),
            Some("tus_patch")
        );
        assert_eq!(operation("/api/v2/uploads", &Method::OPTIONS, None), None);
        assert_eq!(operation("/api/v2/auth", &Method::POST, None), None);
        assert_eq!(operation("/api/v2/parcels/{id}", &Method::HEAD, None), None);
    }

    #[test]
    fn ids_come_from_the_path_only_when_valid() {
        let id = format!("0000000A{}", "B".repeat(64));
        let record = Record::start(
            "v2_remove",
            "r",
            ClientAddress::UNKNOWN,
            &format!("/api/v2/parcels/{id}"),
        );
        assert_eq!(record.known().parcel.as_deref(), Some(id.as_str()));
        let record = Record::start(
            "v2_remove",
            "r",
            ClientAddress::UNKNOWN,
            "/api/v2/parcels/%0Afake",
        );
        assert_eq!(record.known().parcel, None);
        let upload = "0123456789abcdef0123456789abcdef";
        let record = Record::start(
            "tus_head",
            "r",
            ClientAddress::UNKNOWN,
            &format!("/api/v2/uploads/{upload}"),
        );
        assert_eq!(record.known().upload.as_deref(), Some(upload));
    }
}
