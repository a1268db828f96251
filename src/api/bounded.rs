//! Token requests are bounded before anything else runs.
//!
//! `POST /api/v*/auth` needs no proof, so anyone may send one. Its JSON body
//! is a few hundred bytes; [`bounded`], the operations' transform, reads at most
//! [`TOKEN_REQUEST_MAX_BYTES`] of it, within [`TOKEN_REQUEST_DEADLINE`],
//! before the handler parses it. A declared `Content-Length` over the bound
//! answers 413 at once, without reading; a chunked body that crosses it
//! answers 413 as soon as it does.

use std::time::Duration;

use futures_util::TryStreamExt;
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, http::header};

use crate::error::{Error, ErrorResponse};

/// The largest token request body, in bytes.
pub const TOKEN_REQUEST_MAX_BYTES: usize = 4 * 1024;

/// How long a token request body may take to arrive.
pub const TOKEN_REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// The token operations' endpoint `endpoint`, reading the body within its
/// bounds before `endpoint` parses it.
pub fn bounded<E: Endpoint + 'static>(endpoint: E) -> impl Endpoint<Output = Response> {
    endpoint.around(|endpoint, mut request| async move {
        if let Err(err) = read_bounded(&mut request).await {
            return Ok(ErrorResponse::from(err).into_response());
        }
        endpoint
            .call(request)
            .await
            .map(IntoResponse::into_response)
    })
}

/// Reads the body of `request` within the bounds and puts it back.
async fn read_bounded(request: &mut Request) -> Result<(), Error> {
    let too_large = || {
        crate::metrics::limited("token_request_body");
        Error::TooLarge(format!(
            "a token request is at most {TOKEN_REQUEST_MAX_BYTES} bytes"
        ))
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > TOKEN_REQUEST_MAX_BYTES as u64) {
        return Err(too_large());
    }
    let mut stream = request.take_body().into_bytes_stream();
    let mut body = Vec::with_capacity(declared.unwrap_or(0) as usize);
    let read = async {
        while let Some(chunk) = stream
            .try_next()
            .await
            .map_err(|err| Error::body_failed("reading the body", &err))?
        {
            if body.len() + chunk.len() > TOKEN_REQUEST_MAX_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(())
    };
    tokio::time::timeout(TOKEN_REQUEST_DEADLINE, read)
        .await
        .map_err(|_| {
            Error::BadRequest(format!(
                "the token request did not arrive within {} s",
                TOKEN_REQUEST_DEADLINE.as_secs()
            ))
        })??;
    request.set_body(body);
    Ok(())
}
