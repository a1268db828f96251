//! The proof of possession as one extractor: the three headers of every
//! request that uses a token (docs/protocol.md, "Proof of possession").
//!
//! A handler takes one [`Proof`] argument (or an [`OptionalProof`] where a
//! token is needed only in some cases), named `X-Auth-Token`, whose doc
//! comment describes the token for that endpoint:
//!
//! ```ignore
//! /// The one-time JWT from `/auth`, for operation `remove`.
//! #[oai(name = "X-Auth-Token")]
//! proof: Proof,
//! ```
//!
//! poem-openapi lets one extractor describe one parameter, and makes each
//! security scheme of an operation an alternative, never "all three
//! together", so [`WithProof`] rewrites the spec: wherever an operation has
//! the `X-Auth-Token` parameter, it removes it and requires the three API-key
//! security schemes together (one security requirement naming all three;
//! with [`OptionalProof`], or none), and appends the parameter's description
//! to the operation's. poem-openapi cannot write an empty `security: []` (no
//! proof needed), nor a security requirement in a stable order: that is
//! [`crate::api::spec::finish`]'s. The headers are read as before.

use std::{
    collections::{HashMap, HashSet},
    sync::{Mutex, OnceLock},
};

use poem::{Request, RequestBody, Result, endpoint::BoxEndpoint, http::Method};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ExtractParamOptions, OpenApi,
    registry::{MetaApi, MetaOperation, MetaParamIn, MetaSchemaRef, MetaSecurityScheme, Registry},
    types::Type,
};

use crate::auth::ProofHeaders;

/// The header that carries the token, and names the [`Proof`] parameter.
pub const TOKEN_HEADER: &str = "X-Auth-Token";
/// The header that carries the account's public key.
pub const PUBLIC_KEY_HEADER: &str = "X-Public-Key";
/// The header that carries the signature over the token.
pub const SIGNATURE_HEADER: &str = "X-Signature";

/// The security schemes of the spec: (scheme name, header, description).
/// An operation that takes a proof requires all three together.
pub const SECURITY_SCHEMES: [(&str, &str, &str); 3] = [
    (
        "AuthToken",
        TOKEN_HEADER,
        "The one-time JWT from `/auth` for this operation (the operation's \
         description says which). Sent with X-Public-Key and X-Signature.",
    ),
    (
        "PublicKey",
        PUBLIC_KEY_HEADER,
        "The account's P-256 public key: 65 or 33 bytes, hex or base64url.",
    ),
    (
        "Signature",
        SIGNATURE_HEADER,
        "ECDSA P-256/SHA-256 signature over the token: r‖s or DER, hex or base64url.",
    ),
];

/// The three proof headers of a request, as received (each absent when not
/// sent or not visible ASCII, as poem reads a header). The checks are
/// [`crate::auth::Authorizer::authorize`]'s. `REQUIRED` says only whether
/// the spec requires the proof on the operation: [`OptionalProof`] where a
/// request may also go without it.
#[derive(Debug, Clone, Default)]
pub struct Proof<const REQUIRED: bool = true> {
    token: Option<String>,
    public_key: Option<String>,
    signature: Option<String>,
}

/// A proof the operation needs only in some cases (the spec also allows
/// none).
pub type OptionalProof = Proof<false>;

impl<const REQUIRED: bool> Proof<REQUIRED> {
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

impl<'a, const REQUIRED: bool> ApiExtractor<'a> for Proof<REQUIRED> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::Parameter];
    const PARAM_IS_REQUIRED: bool = REQUIRED;

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

/// The APIs `T`, with the proof described as security schemes in the spec
/// (see the module's documentation). Routes are `T`'s, unchanged.
pub struct WithProof<T>(pub T);

/// `text` as a `&'static str`, leaked once per distinct text: the spec's
/// strings are `'static`, and an operation's description with its token's
/// appended is made each time the spec is.
fn interned(text: String) -> &'static str {
    static TEXTS: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut texts = TEXTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(known) = texts.get(text.as_str()) {
        return known;
    }
    let leaked: &'static str = Box::leak(text.into_boxed_str());
    texts.insert(leaked);
    leaked
}

/// Rewrites one operation: its `X-Auth-Token` parameter, if any, becomes
/// the three security schemes required together (or none, when the
/// parameter is not required). An operation without it is left without
/// `security`, which [`crate::api::spec::finish`] writes as `[]`.
fn describe_security(operation: &mut MetaOperation) {
    let at = operation
        .params
        .iter()
        .position(|param| param.in_type == MetaParamIn::Header && param.name == TOKEN_HEADER);
    let Some(at) = at else {
        return;
    };
    let param = operation.params.remove(at);
    let all_three = SECURITY_SCHEMES
        .iter()
        .map(|(scheme, _, _)| (*scheme, Vec::new()))
        .collect();
    operation.security = vec![all_three];
    if !param.required {
        operation.security.push(HashMap::new());
    }
    if let Some(token) = param.description {
        let text = match operation.description {
            Some(description) => format!("{description}\n\n`{TOKEN_HEADER}`: {token}"),
            None => format!("`{TOKEN_HEADER}`: {token}"),
        };
        operation.description = Some(interned(text));
    }
}

impl<T: OpenApi> OpenApi for WithProof<T> {
    fn meta() -> Vec<MetaApi> {
        let mut apis = T::meta();
        apis.iter_mut()
            .flat_map(|api| api.paths.iter_mut())
            .flat_map(|path| path.operations.iter_mut())
            .for_each(describe_security);
        apis
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
        for (scheme, header, description) in SECURITY_SCHEMES {
            registry.create_security_scheme(
                scheme,
                MetaSecurityScheme {
                    ty: "apiKey",
                    description: Some(description),
                    name: Some(header),
                    key_in: Some("header"),
                    scheme: None,
                    bearer_format: None,
                    flows: None,
                    openid_connect_url: None,
                },
            );
        }
    }

    fn add_routes(self, route_table: &mut HashMap<String, HashMap<Method, BoxEndpoint<'static>>>) {
        self.0.add_routes(route_table);
    }
}
