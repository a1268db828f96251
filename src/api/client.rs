//! Which client a request comes from, for the limits that count per client.
//!
//! The client is the TCP peer, or, behind a proxy the service is told to
//! trust (`AMO_TRUST_FORWARDED_FOR`), the last `X-Forwarded-For` entry: the
//! address that proxy saw. Handlers take it as a [`Client`] parameter.

use poem::{FromRequest, Request, RequestBody};

use crate::domain::ClientAddress;

/// Whether `X-Forwarded-For` names the client. Put in the route's data.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientPolicy {
    /// Take the client from the last `X-Forwarded-For` entry, when present.
    pub trust_forwarded_for: bool,
}

impl ClientPolicy {
    /// The client of `request`.
    pub fn client_of(&self, request: &Request) -> ClientAddress {
        if self.trust_forwarded_for {
            let forwarded = request
                .headers()
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(','))
                .filter_map(|entry| entry.trim().parse().ok())
                .next_back();
            if let Some(forwarded) = forwarded {
                return ClientAddress::of(forwarded);
            }
        }
        request
            .remote_addr()
            .as_socket_addr()
            .map_or(ClientAddress::UNKNOWN, |addr| ClientAddress::of(addr.ip()))
    }
}

/// The client of the request being handled.
#[derive(Debug, Clone, Copy)]
pub struct Client(pub ClientAddress);

impl Client {
    /// The client of `request`, under the route's [`ClientPolicy`]: for a
    /// handler that takes the request itself.
    pub fn of(request: &Request) -> Self {
        let policy = request.data::<ClientPolicy>().copied().unwrap_or_default();
        Self(policy.client_of(request))
    }
}

impl<'a> FromRequest<'a> for Client {
    async fn from_request(request: &'a Request, _body: &mut RequestBody) -> poem::Result<Self> {
        Ok(Self::of(request))
    }
}
