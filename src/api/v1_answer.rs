//! The answer of `GET /api/v1/parcels/{id}`: JSON, with a whole parcel's
//! body streamed as hex.
//!
//! The v1 format puts the body in the JSON as hex (`"data"`), so the answer
//! is twice the parcel's size. It is written as it is read from the store:
//! the JSON up to `"data":"`, then each chunk hex-encoded, then `"}`. The
//! length is known before the first byte (`Content-Length`), and a store
//! that fails midway cuts the connection short of it, so a client never
//! takes a cut answer for a whole one. Nothing of the parcel is held whole.

use futures_util::{StreamExt, TryStreamExt, stream};
use poem::{Body, IntoResponse, Response, http::header};
use poem_openapi::{
    payload::Payload,
    registry::{MetaSchemaRef, Registry},
    types::{ToJSON, Type},
};

use super::parcels_v1::{V1ParcelMetadata, V1ParcelView};
use crate::storage::BodyStream;

/// What the v1 read answers: a part of the parcel, or the whole parcel
/// streamed. Its schema is [`V1ParcelView`]'s either way.
pub enum V1Answer {
    /// The metadata or the owner, as JSON.
    Part(V1ParcelView),
    /// The whole parcel: its metadata, then its body as upper-case hex.
    Whole {
        /// The id, owner and metadata.
        head: V1ParcelMetadata,
        /// The body, as the store serves it.
        body: BodyStream,
        /// The body's length in bytes.
        size: u64,
    },
}

impl Payload for V1Answer {
    const CONTENT_TYPE: &'static str = "application/json; charset=utf-8";

    fn schema_ref() -> MetaSchemaRef {
        V1ParcelView::schema_ref()
    }

    fn register(registry: &mut Registry) {
        V1ParcelView::register(registry);
    }
}

impl IntoResponse for V1Answer {
    fn into_response(self) -> Response {
        match self {
            Self::Part(view) => poem::web::Json(view.to_json()).into_response(),
            Self::Whole { head, body, size } => {
                let (opening, closing) = framing(&head);
                let length = opening.len() as u64 + 2 * size + closing.len() as u64;
                let hex = body.map_ok(|chunk| bytes::Bytes::from(hex::encode_upper(&chunk)));
                let answer = stream::once(async move { Ok(opening) })
                    .chain(hex)
                    .chain(stream::once(async move { Ok(closing) }));
                Response::builder()
                    .content_type(Self::CONTENT_TYPE)
                    .header(header::CONTENT_LENGTH, length)
                    .body(Body::from_bytes_stream(answer))
            }
        }
    }
}

/// The JSON before and after the hex of the body: the metadata object
/// serialized as the non-streamed answers are, opened for one more member.
fn framing(head: &V1ParcelMetadata) -> (bytes::Bytes, bytes::Bytes) {
    let mut opening = head
        .to_json()
        .map(|json| json.to_string())
        .unwrap_or_default();
    // An object's text ends with its closing brace.
    opening.pop();
    opening.push_str(if opening.len() > 1 {
        ",\"data\":\""
    } else {
        "\"data\":\""
    });
    (opening.into(), bytes::Bytes::from_static(b"\"}"))
}

#[cfg(test)]
mod tests {
    use futures_util::stream;
    use serde_json::{Value, json};

    use super::*;
    use crate::domain::{Address, ParcelId};

    async fn body_of(response: Response) -> (Option<String>, Vec<u8>) {
        let length = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .map(|value| value.to_str().unwrap().to_owned());
        (length, response.into_body().into_vec().await.unwrap())
    }

    #[tokio::test]
    async fn a_whole_parcel_streams_as_the_json_a_client_parses() {
        let owner = Address::parse(&"AB".repeat(20)).unwrap();
        let id = ParcelId::parse(&format!("00000001{}", "CD".repeat(32))).unwrap();
        let metadata = json!({"owner": owner.to_string(), "name": "a \"quoted\" ü"});
        let chunks: Vec<std::io::Result<bytes::Bytes>> = vec![
            Ok(bytes::Bytes::from_static(&[0x00, 0x1f])),
            Ok(bytes::Bytes::new()),
            Ok(bytes::Bytes::from_static(&[0xab, 0xff, 0x10])),
        ];
        let answer = V1Answer::Whole {
            head: V1ParcelMetadata {
                id: id.clone(),
                owner: owner.clone(),
                metadata: metadata.clone(),
            },
            body: Box::pin(stream::iter(chunks)),
            size: 5,
        };
        let (length, bytes) = body_of(answer.into_response()).await;
        assert_eq!(length, Some(bytes.len().to_string()));
        let parsed: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            parsed,
            json!({"id": id.to_string(), "owner": owner.to_string(), "metadata": metadata, "data": "001FABFF10"})
        );
    }

    #[tokio::test]
    async fn a_store_that_fails_midway_ends_the_stream_short_of_its_length() {
        let owner = Address::parse(&"AB".repeat(20)).unwrap();
        let id = ParcelId::parse(&format!("00000001{}", "CD".repeat(32))).unwrap();
        let chunks: Vec<std::io::Result<bytes::Bytes>> = vec![
            Ok(bytes::Bytes::from_static(&[1, 2])),
            Err(std::io::Error::other("the store went away")),
        ];
        let answer = V1Answer::Whole {
            head: V1ParcelMetadata {
                id,
                owner,
                metadata: json!({}),
            },
            body: Box::pin(stream::iter(chunks)),
            size: 4,
        };
        let response = answer.into_response();
        assert!(response.into_body().into_vec().await.is_err());
    }
}
