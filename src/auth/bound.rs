//! What the signature of a request on a resumable upload covers
//! (docs/protocol.md, "Signing a request on an upload").
//!
//! After creation, `X-Signature` signs not the token alone but the request:
//! its method, the upload, and for a `PATCH` its `Upload-Offset` and
//! `X-Upload-Sequence`. A captured request then serves only as itself, and
//! the upload's sequence makes a served `PATCH` unusable a second time.

/// A request on a resumable upload, as its signature names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadRequest {
    /// `HEAD`: where the upload stands (reads only).
    Head,
    /// `PATCH` at `offset`, the upload's `sequence`-th (from 0).
    Patch {
        /// `Upload-Offset`.
        offset: u64,
        /// `X-Upload-Sequence`.
        sequence: u64,
    },
    /// `DELETE`: ends the upload.
    Delete,
}

impl UploadRequest {
    /// The ASCII text the signature covers:
    /// `<METHOD>\n<upload id>\n<Upload-Offset>\n<X-Upload-Sequence>\n<token>`,
    /// the offset and sequence in decimal, empty for `HEAD` and `DELETE`.
    pub fn signed_text(&self, upload: &str, token: &str) -> String {
        match self {
            Self::Head => format!("HEAD\n{upload}\n\n\n{token}"),
            Self::Patch { offset, sequence } => {
                format!("PATCH\n{upload}\n{offset}\n{sequence}\n{token}")
            }
            Self::Delete => format!("DELETE\n{upload}\n\n\n{token}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_request_signs_its_method_upload_offset_and_sequence() {
        let upload = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            UploadRequest::Head.signed_text(upload, "t.o.k"),
            "HEAD\n0123456789abcdef0123456789abcdef\n\n\nt.o.k"
        );
        assert_eq!(
            UploadRequest::Patch {
                offset: 5242880,
                sequence: 3
            }
            .signed_text(upload, "t.o.k"),
            "PATCH\n0123456789abcdef0123456789abcdef\n5242880\n3\nt.o.k"
        );
        assert_eq!(
            UploadRequest::Delete.signed_text(upload, "t.o.k"),
            "DELETE\n0123456789abcdef0123456789abcdef\n\n\nt.o.k"
        );
    }
}
