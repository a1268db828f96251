//! The proof of possession as one extractor: the three headers of every
//! request that uses a token (docs/protocol.md, "Proof of possession").
//!
//! A handler takes one [`Proof`] argument, named `X-Auth-Token` in the spec,
//! whose doc comment describes the token for that endpoint:
//!
//! ```ignore
//! /// The one-time JWT from `/auth`, for operation `remove`.
//! #[oai(name = "X-Auth-Token")]
//! proof: Proof,
//! ```
//!
//! poem-openapi lets one extractor describe one parameter, so [`WithProof`]
//! completes the spec: wherever an operation has the `X-Auth-Token` header,
//! it adds `X-Public-Key` and `X-Signature` right after it, with their
//! descriptions. Every generator then sees three ordinary optional header
//! parameters, as before.

use std::collections::HashMap;

use poem::{Request, RequestBody, Result, endpoint::BoxEndpoint, http::Method};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ExtractParamOptions, OpenApi,
    registry::{MetaApi, MetaOperationParam, MetaParamIn, MetaSchemaRef, Registry},
    types::Type,
};

use crate::auth::ProofHeaders;

/// The header that carries the token, and names the [`Proof`] parameter.
pub const TOKEN_HEADER: &str = "X-Auth-Token";
/// The header that carries the account's public key.
pub const PUBLIC_KEY_HEADER: &str = "X-Public-Key";
/// The header that carries the signature over the token.
pub const SIGNATURE_HEADER: &str = "X-Signature";

/// `X-Public-Key` in the spec.
const PUBLIC_KEY_DESCRIPTION: &str =
    "The account's P-256 public key: 65 or 33 bytes, hex or base64url.";
/// `X-Signature` in the spec.
const SIGNATURE_DESCRIPTION: &str =
    "ECDSA P-256/SHA-256 signature over the token: r‖s or DER, hex or base64url.";

/// The three proof headers of a request, as received (each absent when not
/// sent or not visible ASCII, as poem reads a header). The checks are
/// [`crate::auth::Authorizer::authorize`]'s.
#[derive(Debug, Clone, Default)]
pub struct Proof {
    token: Option<String>,
    public_key: Option<String>,
    signature: Option<String>,
}

impl Proof {
    /// Borrows the three headers for the authorizer.
    pub fn headers(&self) -> ProofHeaders<'_> {
        ProofHeaders {
            token: self.token.as_deref(),
            public_key: self.public_key.as_deref(),
            signature: self.signature.as_deref(),
        }
    }
}

/// The first value of header `name` that is visible ASCII, as
/// `Header<Option<String>>` reads it.
fn header(request: &Request, name: &str) -> Option<String> {
    request
        .headers()
        .get_all(name)
        .iter()
        .find_map(|value| value.to_str().ok())
        .map(str::to_owned)
}

impl<'a> ApiExtractor<'a> for Proof {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::Parameter];
    const PARAM_IS_REQUIRED: bool = false;

    type ParamType = String;
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        <String as Type>::register(registry);
    }

    fn param_in() -> Option<MetaParamIn> {
        Some(MetaParamIn::Header)
    }

    fn param_schema_ref() -> Option<MetaSchemaRef> {
        Some(<String as Type>::schema_ref())
    }

    async fn from_request(
        request: &'a Request,
        _body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> Result<Self> {
        Ok(Self {
            token: header(request, TOKEN_HEADER),
            public_key: header(request, PUBLIC_KEY_HEADER),
            signature: header(request, SIGNATURE_HEADER),
        })
    }
}

/// The APIs `T`, with `X-Public-Key` and `X-Signature` described after every
/// `X-Auth-Token` header in the spec. Routes are `T`'s, unchanged.
pub struct WithProof<T>(pub T);

impl<T: OpenApi> OpenApi for WithProof<T> {
    fn meta() -> Vec<MetaApi> {
        let mut apis = T::meta();
        let operations = apis
            .iter_mut()
            .flat_map(|api| api.paths.iter_mut())
            .flat_map(|path| path.operations.iter_mut());
        for operation in operations {
            let Some(at) = operation.params.iter().position(|param| {
                param.in_type == MetaParamIn::Header && param.name == TOKEN_HEADER
            }) else {
                continue;
            };
            let sibling = |name: &str, description: &str| MetaOperationParam {
                name: name.to_owned(),
                schema: <String as Type>::schema_ref(),
                in_type: MetaParamIn::Header,
                description: Some(description.to_owned()),
                required: false,
                deprecated: false,
                explode: true,
                style: None,
            };
            let added = [
                sibling(PUBLIC_KEY_HEADER, PUBLIC_KEY_DESCRIPTION),
                sibling(SIGNATURE_HEADER, SIGNATURE_DESCRIPTION),
            ];
            operation.params.splice(at + 1..at + 1, added);
        }
        apis
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn add_routes(self, route_table: &mut HashMap<String, HashMap<Method, BoxEndpoint<'static>>>) {
        self.0.add_routes(route_table);
    }
}
